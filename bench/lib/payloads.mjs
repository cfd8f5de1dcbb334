import { writeFileSync } from 'node:fs';
import { heartbeatBody, initialState, planFleet, sampleHost } from '../../packages/simulator/dist/index.js';

export const STAMP = '@@STAMP@@';

/**
 * The same fleet for every target: `count` hosts from the simulator's plan (1–8 GPUs, mixed
 * profiles), one realistic sample each. `template` is the heartbeat JSON with STAMP where the
 * timestamp goes, so the load generator can send an increasing time per instance.
 */
export function benchFleet(count, { seed = 4, firstInstanceId = 1_000_000 } = {}) {
  const now = Date.now();
  return planFleet({ seed, agents: count, firstInstanceId }).map((spec) => {
    const sample = sampleHost(spec, initialState(spec, now), now, 0, { daySeconds: 600 });
    const body = heartbeatBody(spec, sample, STAMP);
    const template = JSON.stringify(body);
    return {
      instanceId: spec.instanceId,
      hostname: spec.hostname,
      template,
      fixedJson: template.replace(STAMP, new Date(now).toISOString()),
      gpus: sample.gpus,
      sample,
    };
  });
}

const esc = (s) => s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');

/** The same GPU metrics as Prometheus text exposition, for a pushgateway group per instance. */
export function exposition(host) {
  const lines = [];
  const metrics = [
    ['utilization_percent', 'dumont_gpu_utilization_percent'],
    ['memory_used_mb', 'dumont_gpu_memory_used_mb'],
    ['memory_total_mb', 'dumont_gpu_memory_total_mb'],
    ['temperature_celsius', 'dumont_gpu_temperature_celsius'],
    ['power_watts', 'dumont_gpu_power_watts'],
  ];
  for (const [field, name] of metrics) {
    lines.push(`# TYPE ${name} gauge`);
    for (const g of host.gpus) {
      // Prometheus has no null: an unknown value is simply not exported.
      if (g[field] === null || g[field] === undefined) continue;
      lines.push(`${name}{gpu="${g.index}",uuid="${esc(g.uuid ?? '')}",name="${esc(g.name ?? '')}"} ${g[field]}`);
    }
  }
  const s = host.sample;
  lines.push('# TYPE dumont_process_count gauge');
  if (s.processCount !== null) lines.push(`dumont_process_count ${s.processCount}`);
  lines.push('# TYPE dumont_active_users gauge');
  if (s.activeUsers !== null) lines.push(`dumont_active_users ${s.activeUsers}`);
  lines.push('# TYPE dumont_last_activity_timestamp_seconds gauge');
  if (s.lastActivityMs !== null) lines.push(`dumont_last_activity_timestamp_seconds ${s.lastActivityMs / 1000}`);
  return `${lines.join('\n')}\n`;
}

/**
 * One request per line for bench/wrk-rotate.lua and bench/open-loop.mjs:
 * method, path, authorization, content-type, body before the stamp, body after it, stamped (1/0),
 * tab-separated; newlines inside a body are written as \x01.
 */
export function writeRequestFile(path, requests) {
  const lines = requests.map((r) => {
    const [prefix, suffix] = r.stamp ? r.body.split(STAMP) : [r.body, ''];
    const fields = [r.method, r.path, r.authorization ?? '', r.contentType, prefix, suffix, r.stamp ? '1' : '0'];
    for (const f of fields) if (/[\t\x01]/.test(f)) throw new Error('request fields may not hold tabs or \\x01');
    return fields.map((f) => f.replace(/\n/g, '\x01')).join('\t');
  });
  writeFileSync(path, `${lines.join('\n')}\n`, { mode: 0o600 });
}

export function heartbeatRequests(fleet, tokenOf) {
  return fleet.map((h) => ({
    method: 'POST',
    path: '/api/v1/agent/status',
    authorization: `Bearer ${tokenOf(h)}`,
    contentType: 'application/json',
    body: h.template,
    stamp: true,
  }));
}

export function etcdRequests(fleet) {
  const b64 = (s) => Buffer.from(s).toString('base64');
  return fleet.map((h) => ({
    method: 'POST',
    path: '/v3/kv/put',
    contentType: 'application/json',
    // A key per instance, the heartbeat as value: how Kubernetes keeps node leases.
    body: JSON.stringify({ key: b64(`/dumont/heartbeats/${h.instanceId}`), value: b64(h.fixedJson) }),
    stamp: false,
  }));
}

export function pushgatewayRequests(fleet) {
  return fleet.map((h) => ({
    method: 'PUT',
    path: `/metrics/job/dumont/instance/${h.instanceId}`,
    contentType: 'text/plain; version=0.0.4',
    body: exposition(h),
    stamp: false,
  }));
}
