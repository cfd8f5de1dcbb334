import { describe, expect, it } from 'vitest';
import * as protocol from '@dumont/protocol';
import { aggregateGpuMetrics } from './protocol-aggregate.js';

describe('aggregateGpuMetrics loaded on its own', () => {
  it('is the protocol’s function, not a copy', () => {
    expect(aggregateGpuMetrics).toBe(protocol.aggregateGpuMetrics);
  });
});
