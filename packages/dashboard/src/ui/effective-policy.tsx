import type { EffectivePolicyView } from '@dumont/protocol';
import { date } from './format.js';

type Sourced = { value: number | string | boolean; source: string };

/** What governs this instance's hibernation now, each value with where it came from (policy, limit, schedule…). */
export function EffectivePolicy({ view }: { view: EffectivePolicyView }) {
  const { policy, schedule, forced } = view;
  const row = (term: string, field: Sourced, unit = '') => (
    <>
      <dt>{term}</dt>
      <dd>
        {typeof field.value === 'boolean' ? (field.value ? 'yes' : 'no') : `${field.value}${unit}`}
        <small class="muted"> · {field.source === 'policy' ? `policy ${policy}` : field.source}</small>
      </dd>
    </>
  );
  return (
    <section class="card" aria-labelledby="effective-title">
      <h2 id="effective-title">Effective policy</h2>
      {forced && <p class="banner warning">Will be hibernated even if busy: {forced}</p>}
      <dl class="facts">
        <dt>Policy</dt>
        <dd>{policy ?? 'server defaults'}</dd>
        {row('Threshold', view.threshold_minutes, ' min')}
        {row('Idle utilization', view.idle_utilization_percent, ' %')}
        {row('Warning', view.warning_seconds, ' s')}
        {row('Enabled', view.enabled)}
        {row('Dry run', view.dry_run)}
        {row('Provider', view.provider)}
        {view.max_uptime_hours !== null && row('Max uptime', { value: view.max_uptime_hours, source: 'policy' }, ' h')}
        {schedule && (
          <>
            <dt>Schedule</dt>
            <dd>
              {schedule.active.join(', ')} {schedule.timezone} · outside:{' '}
              {schedule.outside === 'idle_only' && schedule.outside_threshold_minutes !== null ? `threshold ${schedule.outside_threshold_minutes} min` : schedule.outside} · now{' '}
              {schedule.within_active_hours ? 'within' : 'outside'} hours
              {schedule.next_change_at && (
                <>
                  , until <time dateTime={schedule.next_change_at}>{date(schedule.next_change_at)}</time>
                </>
              )}
            </dd>
          </>
        )}
        {view.signals.length > 0 && <dt>Signals</dt>}
        {view.signals.map((s) => (
          <dd key={s.name}>
            {s.name}: {s.state ?? 'not read yet'}
            {s.detail && ` — ${s.detail}`}
          </dd>
        ))}
      </dl>
    </section>
  );
}
