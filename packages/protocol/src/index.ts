export * from './common.js';
export * from './commands.js';
export * from './heartbeat.js';
export * from './instances.js';
export * from './errors.js';
export * from './aggregate.js';
export * from './idle-rule.js';
export * from './time.js';
