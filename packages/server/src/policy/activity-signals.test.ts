import { describe, expect, it } from 'vitest';
import {
  expandSignalUrl,
  judgeSignals,
  signalSpecProblem,
  type SignalReading,
  type SignalSpec,
} from './activity-signals.js';

const NOW = Date.parse('2026-03-01T12:00:00Z');
const slurm: SignalSpec = { name: 'slurm', type: 'agent', key: 'slurm' };
const hub: SignalSpec = { name: 'jupyter-hub', type: 'http', url: 'http://hub.test/busy?host={hostname}' };
const readings =
  (byName: Record<string, SignalReading>) =>
  (spec: { name: string }): SignalReading | undefined =>
    byName[spec.name];
const none = () => undefined;

describe('judgeSignals', () => {
  it('no signals: nothing to say', () => {
    expect(judgeSignals([], undefined, none, NOW)).toEqual({ active: false, reason: null, verdicts: [] });
  });

  it('all idle: not active, no reason, a verdict per signal', () => {
    const result = judgeSignals([slurm, hub], [{ key: 'slurm', state: 'idle', detail: 'queue empty' }], readings({ 'jupyter-hub': { state: 'idle', detail: '', at: NOW - 1000 } }), NOW);
    expect(result).toEqual({
      active: false,
      reason: null,
      verdicts: [
        { name: 'slurm', state: 'idle', detail: 'queue empty' },
        { name: 'jupyter-hub', state: 'idle', detail: '' },
      ],
    });
  });

  it('one active signal keeps the machine active and the reason names it', () => {
    const result = judgeSignals([slurm, hub], [{ key: 'slurm', state: 'active', detail: '2 jobs running' }], readings({ 'jupyter-hub': { state: 'idle', detail: '', at: NOW } }), NOW);
    expect(result.active).toBe(true);
    expect(result.reason).toBe('signal "slurm" active: 2 jobs running');
  });

  it('an unavailable signal counts as active; the reason names every non-idle signal', () => {
    const result = judgeSignals(
      [slurm, hub],
      [{ key: 'slurm', state: 'active', detail: '2 jobs running' }],
      readings({ 'jupyter-hub': { state: 'unavailable', detail: 'timed out after 5 s', at: NOW } }),
      NOW,
    );
    expect(result.active).toBe(true);
    expect(result.reason).toBe('signal "slurm" active: 2 jobs running; signal "jupyter-hub" unavailable: timed out after 5 s');
  });

  it('a state without detail is named without a colon', () => {
    expect(judgeSignals([slurm], [{ key: 'slurm', state: 'active' }], none, NOW).reason).toBe('signal "slurm" active');
  });

  it('an agent key missing from the beat, or a beat without activity_signals (an old agent), is unavailable', () => {
    const spec: SignalSpec = { name: 'queue', type: 'agent', key: 'slurm' };
    for (const reports of [undefined, [], [{ key: 'other', state: 'idle' as const }]]) {
      const result = judgeSignals([spec], reports, none, NOW);
      expect(result.active).toBe(true);
      expect(result.verdicts).toEqual([{ name: 'queue', state: 'unavailable', detail: 'the agent did not report signal slurm; does it run --signal-hook slurm=…?' }]);
      expect(result.reason).toBe('signal "queue" unavailable: the agent did not report signal slurm; does it run --signal-hook slurm=…?');
    }
  });

  it('reads the report by the spec’s key, not its name', () => {
    const spec: SignalSpec = { name: 'queue', type: 'agent', key: 'slurm' };
    expect(judgeSignals([spec], [{ key: 'queue', state: 'active' }, { key: 'slurm', state: 'idle' }], none, NOW).active).toBe(false);
  });

  it('an HTTP signal never read yet is unavailable', () => {
    const result = judgeSignals([hub], undefined, none, NOW);
    expect(result).toMatchObject({ active: true, verdicts: [{ name: 'jupyter-hub', state: 'unavailable' }] });
    expect(result.reason).toMatch(/^signal "jupyter-hub" unavailable: /);
  });

  it('an HTTP reading goes stale after max(3 × interval, 90 s)', () => {
    const idleAt = (at: number) => readings({ 'jupyter-hub': { state: 'idle', detail: '', at } });
    // Default interval 60 s → 180 s.
    expect(judgeSignals([hub], undefined, idleAt(NOW - 180_000), NOW).active).toBe(false);
    const stale = judgeSignals([hub], undefined, idleAt(NOW - 180_001), NOW);
    expect(stale.active).toBe(true);
    expect(stale.verdicts[0]).toMatchObject({ state: 'unavailable', detail: expect.stringMatching(/stale/) });
    // A 10 s interval still gets the 90 s floor.
    const fast: SignalSpec = { ...hub, interval_seconds: 10 } as SignalSpec;
    expect(judgeSignals([fast], undefined, idleAt(NOW - 90_000), NOW).active).toBe(false);
    expect(judgeSignals([fast], undefined, idleAt(NOW - 90_001), NOW).active).toBe(true);
    // A long interval stretches it.
    const slow: SignalSpec = { ...hub, interval_seconds: 600 } as SignalSpec;
    expect(judgeSignals([slow], undefined, idleAt(NOW - 1_800_000), NOW).active).toBe(false);
    expect(judgeSignals([slow], undefined, idleAt(NOW - 1_800_001), NOW).active).toBe(true);
  });

  it('hands each HTTP spec to the readings lookup', () => {
    const asked: string[] = [];
    judgeSignals([hub, slurm, { name: 'b', type: 'http', url: 'http://b.test/' }], [], (spec) => (asked.push(spec.url), undefined), NOW);
    expect(asked).toEqual(['http://hub.test/busy?host={hostname}', 'http://b.test/']);
  });
});

describe('signalSpecProblem', () => {
  const ok: unknown[] = [
    { name: 'slurm', type: 'agent', key: 'slurm' },
    { name: 'hub.v2', type: 'http', url: 'https://hub.test/api/{instance_id}/busy?h={hostname}&p={provider_instance_id}', timeout_seconds: 30, interval_seconds: 10 },
    { name: 'plain_1', type: 'http', url: 'http://hub.test:8000/{hostname}/busy', timeout_seconds: 1, interval_seconds: 3600 },
  ];

  it('accepts good specs, and none', () => {
    expect(signalSpecProblem(ok)).toBeNull();
    expect(signalSpecProblem([])).toBeNull();
  });

  it('at most 8 signals', () => {
    const many = Array.from({ length: 9 }, (_, i) => ({ name: `s${i}`, type: 'agent', key: 'k' }));
    expect(signalSpecProblem(many.slice(0, 8))).toBeNull();
    expect(signalSpecProblem(many)).toMatchObject({ field: 'signals' });
  });

  const bad: [string, unknown, string, RegExp?][] = [
    ['not an object', 'slurm', 'signals[0]'],
    ['missing name', { type: 'agent', key: 'k' }, 'signals[0].name'],
    ['upper-case name', { name: 'Slurm', type: 'agent', key: 'k' }, 'signals[0].name'],
    ['name with a space', { name: 'a b', type: 'agent', key: 'k' }, 'signals[0].name'],
    ['65-character name', { name: 'a'.repeat(65), type: 'agent', key: 'k' }, 'signals[0].name'],
    ['unknown type', { name: 'x', type: 'grpc', url: 'http://a/' }, 'signals[0].type'],
    ['bad agent key', { name: 'x', type: 'agent', key: '.x' }, 'signals[0].key'],
    ['missing agent key', { name: 'x', type: 'agent' }, 'signals[0].key'],
    ['unknown field', { name: 'x', type: 'agent', key: 'k', foo: 1 }, 'signals[0].foo'],
    ['http field on an agent signal', { name: 'x', type: 'agent', key: 'k', url: 'http://a/' }, 'signals[0].url'],
    ['missing url', { name: 'x', type: 'http' }, 'signals[0].url'],
    ['relative url', { name: 'x', type: 'http', url: '/busy' }, 'signals[0].url', /absolute/],
    ['ftp url', { name: 'x', type: 'http', url: 'ftp://a/busy' }, 'signals[0].url', /http or https/],
    ['url with credentials', { name: 'x', type: 'http', url: 'http://user:pass@a/busy' }, 'signals[0].url', /credentials/],
    ['url with a user only', { name: 'x', type: 'http', url: 'https://user@a/busy' }, 'signals[0].url', /credentials/],
    ['unknown placeholder', { name: 'x', type: 'http', url: 'http://a/{token}' }, 'signals[0].url', /\{token\}/],
    ['unmatched brace', { name: 'x', type: 'http', url: 'http://a/{hostname' }, 'signals[0].url'],
    ['timeout 0', { name: 'x', type: 'http', url: 'http://a/', timeout_seconds: 0 }, 'signals[0].timeout_seconds'],
    ['timeout 31', { name: 'x', type: 'http', url: 'http://a/', timeout_seconds: 31 }, 'signals[0].timeout_seconds'],
    ['fractional timeout', { name: 'x', type: 'http', url: 'http://a/', timeout_seconds: 1.5 }, 'signals[0].timeout_seconds'],
    ['timeout as text', { name: 'x', type: 'http', url: 'http://a/', timeout_seconds: '5' }, 'signals[0].timeout_seconds'],
    ['interval 9', { name: 'x', type: 'http', url: 'http://a/', interval_seconds: 9 }, 'signals[0].interval_seconds'],
    ['interval 3601', { name: 'x', type: 'http', url: 'http://a/', interval_seconds: 3601 }, 'signals[0].interval_seconds'],
  ];
  for (const [what, spec, field, message] of bad) {
    it(`${what} → ${field}`, () => {
      const problem = signalSpecProblem([spec]);
      expect(problem).toMatchObject({ field });
      if (message) expect(problem!.message).toMatch(message);
    });
  }

  it('names the index of the faulty spec, and a duplicate name', () => {
    expect(signalSpecProblem([...ok, { name: 'x', type: 'http', url: 'mailto:a@b' }])).toMatchObject({ field: 'signals[3].url' });
    expect(signalSpecProblem([...ok, { name: 'slurm', type: 'agent', key: 'other' }])).toEqual({ field: 'signals[3].name', message: 'duplicate signal name "slurm"' });
  });
});

describe('signal URLs', () => {
  it('expands placeholders with URL-encoded values; an unknown hostname is empty', () => {
    const vars = { instance_id: '42', hostname: 'gpu 1/a', provider_instance_id: 'i-0a&b=c' };
    expect(expandSignalUrl('http://h/{instance_id}/{hostname}?p={provider_instance_id}&again={instance_id}', vars)).toBe('http://h/42/gpu%201%2Fa?p=i-0a%26b%3Dc&again=42');
    expect(expandSignalUrl('http://h/busy?host={hostname}', { ...vars, hostname: null })).toBe('http://h/busy?host=');
    expect(expandSignalUrl('http://h/busy', vars)).toBe('http://h/busy');
  });
});

describe('signal URLs an agent could steer', () => {
  it('refuses a placeholder in the host: an agent names its own hostname, not the server the policy polls', () => {
    for (const url of ['http://{hostname}:8888/api/status', 'https://{instance_id}.hub.example/x', 'http://hub.example:{instance_id}/x', 'http://user{hostname}@hub.example/x']) {
      expect(signalSpecProblem([{ name: 'hub', type: 'http', url }]), url).toMatchObject({ field: 'signals[0].url', message: expect.stringMatching(/not in the host/) });
    }
    expect(signalSpecProblem([{ name: 'hub', type: 'http', url: 'http://hub.example/hosts/{hostname}/busy?id={instance_id}' }])).toBeNull();
  });

  it('a "." or ".." value would be a path segment, so that URL is not read at all (unread counts as active)', () => {
    const vars = { instance_id: '1', provider_instance_id: 'p' };
    expect(expandSignalUrl('http://hub.example/hosts/{hostname}/busy', { ...vars, hostname: '..' })).toBeNull();
    expect(expandSignalUrl('http://hub.example/hosts/{hostname}/busy', { ...vars, hostname: '.' })).toBeNull();
    // Why not encode them: a URL parser resolves %2E%2E as it does "..".
    expect(new URL('http://hub.example/hosts/%2E%2E/busy').pathname).toBe('/busy');
    expect(expandSignalUrl('http://hub.example/hosts/{hostname}', { ...vars, hostname: 'a..b' })).toBe('http://hub.example/hosts/a..b');
  });
});
