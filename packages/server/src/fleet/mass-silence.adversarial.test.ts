import { afterEach, describe, expect, it } from 'vitest';
import { testBackends } from '../test-support/backends.js';
import { recordFigure } from '../test-support/reliability.js';
import { TestServer } from '../test-support/test-server.js';
import { judgeMassSilence, type SilenceSettings } from './mass-silence.js';

const S = 1000;
const settings: SilenceSettings = { offlineAfterSeconds: 90, massOfflineRatio: 0.5, massOfflineMinInstances: 10, massOfflineHoldMinutes: 60 };
const NOW = Date.parse('2026-03-01T12:00:00Z');

describe('judgeMassSilence (pure)', () => {
  it('enters when at least the ratio of the watched fleet went silent within one window', () => {
    expect(judgeMassSilence(null, { online: 60, offlineSinceWindow: 59 }, NOW, settings)).toEqual({ next: null, change: null });
    const { next, change } = judgeMassSilence(null, { online: 60, offlineSinceWindow: 60 }, NOW, settings);
    expect(change).toBe('entered');
    expect(next).toEqual({ since: NOW, windowStart: NOW - 90 * S, watched: 120, silent: 60 });
  });

  it('a small fleet losing a few machines is not a mass silence', () => {
    expect(judgeMassSilence(null, { online: 2, offlineSinceWindow: 9 }, NOW, settings).change).toBeNull();
    expect(judgeMassSilence(null, { online: 0, offlineSinceWindow: 10 }, NOW, settings).change).toBe('entered');
  });

  it('holds while the silent stay silent, ends when enough beat again, or after the hold limit', () => {
    const entered = judgeMassSilence(null, { online: 40, offlineSinceWindow: 60 }, NOW, settings).next!;
    const holding = judgeMassSilence(entered, { online: 45, offlineSinceWindow: 55 }, NOW + 5 * 60 * S, settings);
    expect(holding).toEqual({ next: { ...entered, silent: 55 }, change: null });
    expect(judgeMassSilence(entered, { online: 60, offlineSinceWindow: 49 }, NOW + 6 * 60 * S, settings)).toEqual({ next: null, change: 'returned' });
    expect(judgeMassSilence(entered, { online: 40, offlineSinceWindow: 60 }, NOW + 60 * 60 * S, settings)).toEqual({ next: null, change: 'released' });
  });
});

for (const backend of await testBackends()) {
  describe.skipIf(backend.skipReason !== null)(`mass silence over HTTP (${backend.name})`, () => {
    let t: TestServer;
    let dispose: () => Promise<void>;
    afterEach(async () => {
      await t.close();
      await dispose();
    });

    it('when most of the fleet goes silent at once, nothing is scheduled or fired until their beats return', async () => {
      const db = await backend.open();
      dispose = db.dispose;
      t = await new TestServer(async () => db.store, { DUMONT_IDLE_THRESHOLD_MINUTES: '3', DUMONT_HIBERNATION_WARNING_SECONDS: '0' }).start();
      const ids = Array.from({ length: 20 }, (_, i) => 100 + i);
      const tokens = new Map<number, string>();
      for (const id of ids) tokens.set(id, await t.register(id));
      const idle = (id: number) => t.beat(tokens.get(id)!, { instance_id: id, gpu_metrics: { utilization_percent: 0 }, process_count: 0 });
      t.clock.advance(90 * S);
      for (const id of ids) await idle(id);
      const [silent, watched] = [ids.slice(0, 12), ids.slice(12)];
      // Twelve of twenty stop beating (a partition); the rest keep beating idle past the threshold.
      for (let s = 30; s <= 120; s += 30) {
        t.clock.advance(30 * S);
        for (const id of watched) await idle(id);
        await t.sweep();
      }
      let list = (await t.request('GET', '/api/v1/agent/instances')).json;
      expect(list).toMatchObject({ offline_count: 12, mass_silence: { silent: 12, watched: 20 } });
      let heldBeats = 0;
      for (let i = 0; i < 4; i++) {
        t.clock.advance(30 * S);
        for (const id of watched) {
          expect((await idle(id)).json).toMatchObject({ commands: [], hibernate_in_seconds: null });
          heldBeats += 1;
        }
        await t.sweep();
      }
      expect(list.idle_count).toBe(8);
      const events = (await t.request('GET', `/api/v1/agent/instances/${watched[0]}/events`)).json.events.map((e: { type: string }) => e.type);
      expect(events).not.toContain('hibernation_scheduled');
      // Beats return: the hold ends at the next pass and the idle ones are scheduled again.
      for (const id of silent) await idle(id);
      await t.sweep();
      list = (await t.request('GET', '/api/v1/agent/instances')).json;
      expect(list.mass_silence).toBeNull();
      t.clock.advance(30 * S);
      const answer = (await idle(watched[0]!)).json;
      expect(answer.commands.map((c: { type: string }) => c.type)).toEqual(['hibernate']);
      const suite = 'Mass silence';
      recordFigure({ suite, figure: `fleet / silent at once (${backend.name})`, value: `${ids.length} / ${silent.length}` });
      recordFigure({ suite, figure: `idle beats answered while held, past the threshold (${backend.name})`, value: heldBeats });
      recordFigure({ suite, figure: `hibernations scheduled or fired while held (${backend.name})`, value: 0 });
    });
  });
}
