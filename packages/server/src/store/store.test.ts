import { testBackends } from '../test-support/backends.js';
import { storeContract } from './store.contract.js';

for (const backend of await testBackends()) storeContract(backend);
