/**
 * `aggregateGpuMetrics` from its own subpath: the package root also loads every TypeBox schema, about
 * 10 MB of resident memory in a daemon whose budget is 40 MB, for one pure function.
 */
export { aggregateGpuMetrics } from '@dumont/protocol/aggregate';
