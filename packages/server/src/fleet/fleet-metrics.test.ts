import { mkdtempSync, rmSync } from 'node:fs';
import { rowsOf } from '../test-support/rows.js';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ManualClock } from '../clock.js';
import { newInstanceRow } from '../store/schema.js';
import { SqliteStore } from '../store/sqlite-store.js';
import { escapeLabel, FleetMetrics, labelPairs } from './fleet-metrics.js';

const T0 = Date.parse('2026-03-01T12:00:00Z');
const gpus = (n: number) =>
  JSON.stringify(Array.from({ length: n }, (_, index) => ({ index, uuid: `GPU-${index}`, utilization_percent: 40, memory_used_mb: 1, memory_total_mb: 2, temperature_celsius: null, power_watts: 100 })));

describe('FleetMetrics scrape', () => {
  let dir: string;
  let store: SqliteStore;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'dumont-metrics-'));
    store = await SqliteStore.open(join(dir, 'd.db'));
  });
  afterEach(async () => {
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('reads the fleet page by page, every instance once, and lets the event loop run between pages', async () => {
    for (let id = 1; id <= 7; id++) {
      await rowsOf(store).insertInstanceRow(newInstanceRow({ instance_id: id, owner: 'alice', agent_token_hash: `h${id}`, registered_at: T0, hostname: `gpu-${id}`, status: 'active', gpus_json: gpus(2), gpu_count: 2 }));
    }
    const metrics = new FleetMetrics(store, new ManualClock(T0), 3);
    let immediates = 0;
    const count = () => {
      immediates += 1;
      if (!done) setImmediate(count);
    };
    let done = false;
    setImmediate(count);
    const text = await metrics.scrape();
    done = true;
    const series = text.split('\n').filter((l) => l.startsWith('dumont_gpu_utilization_ratio{'));
    expect(series).toHaveLength(14);
    expect(new Set(series.map((l) => /instance_id="(\d+)"/.exec(l)![1]))).toEqual(new Set(['1', '2', '3', '4', '5', '6', '7']));
    // Three pages: the scrape gave the event loop at least two turns before it finished.
    expect(immediates).toBeGreaterThanOrEqual(2);
    // Unknown temperatures are absent, not 0; each family has one header.
    expect(text).not.toMatch(/^dumont_gpu_temperature_celsius\{/m);
    expect(text.match(/^# TYPE dumont_gpu_power_watts gauge$/gm)).toHaveLength(1);
    expect(text.endsWith('\n')).toBe(true);
  });

  it('escapes label values as the exposition format says', async () => {
    expect(escapeLabel('plain-host')).toBe('plain-host');
    expect(escapeLabel('rack "7" \\ left\nrow')).toBe('rack \\"7\\" \\\\ left\\nrow');
    await rowsOf(store).insertInstanceRow(newInstanceRow({ instance_id: 9, owner: 'alice', agent_token_hash: 'h9', registered_at: T0, hostname: 'rack "7" \\ left', status: 'idle', gpus_json: gpus(1), gpu_count: 1 }));
    const text = await new FleetMetrics(store, new ManualClock(T0)).scrape();
    expect(text).toContain('dumont_gpu_power_watts{instance_id="9",hostname="rack \\"7\\" \\\\ left",gpu="0",uuid="GPU-0"} 100');
  });

  it('exports each labelled instance once as dumont_instance_labels, across pages, with label reads one per page', async () => {
    for (let id = 1; id <= 7; id++) {
      await rowsOf(store).insertInstanceRow(newInstanceRow({ instance_id: id, owner: 'alice', agent_token_hash: `h${id}`, registered_at: T0, status: 'offline' }));
      if (id !== 4) await store.setLabels(id, { team: id % 2 ? 'vision' : 'nlp', 'app.kind': 'notebook' });
    }
    let labelReads = 0;
    const read = store.labelsOf.bind(store);
    const counted = Object.assign(Object.create(store) as SqliteStore, {
      labelsOf: (ids: readonly number[]) => {
        labelReads += 1;
        return read(ids);
      },
    });
    const text = await new FleetMetrics(counted, new ManualClock(T0), 3).scrape();
    const series = text.split('\n').filter((l) => l.startsWith('dumont_instance_labels{'));
    expect(series).toEqual(
      [1, 2, 3, 5, 6, 7].map((id) => `dumont_instance_labels{instance_id="${id}",label_app_kind="notebook",label_team="${id % 2 ? 'vision' : 'nlp'}"} 1`),
    );
    // Pages of 3 over 7 instances: three pages, one label read each.
    expect(labelReads).toBe(3);
    expect(text.match(/^# TYPE dumont_instance_labels gauge$/gm)).toHaveLength(1);
  });

  it('writes label names kube-state-metrics style; keys colliding after that keep the lexicographically first', () => {
    expect(labelPairs({})).toBe('');
    expect(labelPairs({ team: 'vision', 'a.b': 'dot', 'a-b': 'dash', a_b: 'underscore', '9x': '' })).toBe(
      ',label_9x="",label_a_b="dash",label_team="vision"',
    );
  });
});
