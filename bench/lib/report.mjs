import { existsSync, readFileSync, writeFileSync } from 'node:fs';

const num = (n, digits = 0) => (n === null || n === undefined || Number.isNaN(n) ? '–' : n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }));
const ms = (n) => (n === null || n === undefined ? '–' : n < 10 ? num(n, 2) : n < 100 ? num(n, 1) : num(n, 0));
const ratio = (a, b) => {
  if (!a || !b) return '–';
  const x = a / b;
  return `${x < 0.1 ? x.toPrecision(2) : num(x, x < 10 ? 2 : 1)}×`;
};

export function closedLoopTable(rows) {
  const base = (name) => rows.find((r) => r.target === name)?.rps;
  const node = base('node:http');
  const etcd = base('etcd');
  const pushgateway = base('pushgateway');
  const lines = [
    '| target | durability | req/s | p50 ms | p99 ms | CPU % of a core | peak RSS MB | vs node:http | vs etcd | vs pushgateway | errors | wrk CPU % | other processes CPU % |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    const cpu = r.storeCpuPercent === null || r.storeCpuPercent === undefined ? num(r.cpuPercent) : `${num(r.cpuPercent)} + PG ${num(r.storeCpuPercent)}`;
    lines.push(
      `| ${r.target} | ${r.durability} | ${num(r.rps)} | ${ms(r.p50)} | ${ms(r.p99)} | ${cpu} | ${num(r.rssMb)} | ${ratio(r.rps, node)} | ${ratio(r.rps, etcd)} | ${ratio(r.rps, pushgateway)} | ${r.errors + r.non2xx} | ${num(r.wrkCpuPercent)} | ${num(r.otherCpuPercent)} |`,
    );
  }
  return lines.join('\n');
}

export function fixedRateTable(rows) {
  const lines = [
    '| target | durability | asked/s | answered/s | p50 ms | p99 ms | p99.9 ms | max ms | CPU % of a core | errors | generator CPU % | other processes CPU % |',
    '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.target} | ${r.durability} | ${num(r.rate)} | ${num(r.answeredPerSecond)} | ${ms(r.p50)} | ${ms(r.p99)} | ${ms(r.p999)} | ${ms(r.max)} | ${num(r.cpuPercent)} | ${r.errors + r.non2xx + r.unanswered} | ${num(r.generatorCpuPercent)} | ${num(r.otherCpuPercent)} |`,
    );
  }
  return lines.join('\n');
}

function roundText(r) {
  return (
    `${num(r.requests)} beats, ${num(r.answeredPerSecond)}/s answered, errors ${num(r.errors + r.non2xx + r.unanswered)}; ` +
    `latency p50 ${ms(r.p50)} / p99 ${ms(r.p99)} / max ${ms(r.max)} ms`
  );
}

export function fleetTable(f) {
  const l = (x) => `p50 ${ms(x.p50)} / p99 ${ms(x.p99)} / max ${ms(x.max)} ms (${num(x.requests)} requests)`;
  const s = f.sweep;
  const rows = [
    ['instances registered (through the API)', `${num(f.registration.registered)} in ${num(f.registration.seconds, 1)} s (${num(f.registration.perSecond)}/s)`],
    [`join round: each instance's first beat, ${num(f.beatsPerSecondAsked)}/s open loop (a stored transition each)`, roundText(f.joinRound)],
    [`steady round: each instance beats again, ${num(f.beatsPerSecondAsked)}/s open loop (plain metric updates)`, roundText(f.steadyRound)],
    ['server CPU during the steady round', `${num(f.steadyCpuPercent)} % of a core`],
    ['`GET /instances?limit=100`, quiet', l(f.listQuiet.page)],
    ['`…&status=idle`, quiet', l(f.listQuiet.idleFilter)],
    ['`…&cursor=<middle>`, quiet', l(f.listQuiet.cursorMiddle)],
    ['`GET /instances?limit=100`, steady round beating', l(f.listUnderLoad.page)],
    ['`…&status=idle`, steady round beating', l(f.listUnderLoad.idleFilter)],
    ['`…&cursor=<middle>`, steady round beating', l(f.listUnderLoad.cursorMiddle)],
    ...(s.missing
      ? [['sweeper tick', `not measured: ${s.missing}`]]
      : [
          [`sweeper catch-up: what was due when the server stopped`, `${num(s.catchUp.changed)} instances in ${ms(s.catchUp.ms)} ms`],
          [`sweeper tick, nothing due (${s.nothingDue.ticks} ticks)`, `p50 ${ms(s.nothingDue.p50Ms)} / p99 ${ms(s.nothingDue.p99Ms)} / max ${ms(s.nothingDue.maxMs)} ms`],
          ...s.due.map((d) => [`sweeper tick, ${num(d.due)} due → offline (${d.rounds} rounds)`, `mean ${ms(d.meanMs)} / max ${ms(d.maxMs)} ms (${ms(d.perInstanceMs)} ms per due instance)`]),
        ]),
    ['server peak RSS (VmHWM) / RSS at the end', `${num(f.serverPeakRssMb)} MB / ${num(f.serverRssMb)} MB`],
  ];
  return ['| measurement | result |', '|---|---|', ...rows.map(([a, b]) => `| ${a} | ${b} |`)].join('\n');
}

export function listTable(l) {
  const rows = l.measurements.map((m) => `| ${m.what} | ${num(m.rows)} | ${ms(m.p50)} | ${ms(m.p95)} | ${ms(m.p99)} | ${ms(m.max)} |`);
  return ['| `GET /instances?limit=' + l.page + '&…` | rows | p50 ms | p95 ms | p99 ms | max ms |', '|---|---:|---:|---:|---:|---:|', ...rows].join('\n');
}

const mean = (values) => (values.length ? values.reduce((a, b) => a + b, 0) / values.length : null);
const signedMs = (d) => (d === null || d === undefined ? '–' : `${d >= 0 ? '+' : '−'}${ms(Math.abs(d))} ms`);

const PROVIDER_P99_MARGIN_MS = 5;
/** A run during which other processes took more than this (% of a core) is flagged as disturbed. */
const DISTURBED_CPU_PERCENT = 25;

const median = (values) => {
  const v = values.filter((x) => x !== null && x !== undefined).sort((a, b) => a - b);
  if (v.length === 0) return null;
  return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};

/**
 * The provider target per scenario, the median of its rounds: two runs of one scenario on a fresh
 * server differ by several per cent even on a quiet machine, as much as the target allows, so one
 * run per scenario decides nothing. Stop counts are the mean per run.
 */
export function providerSummary(p) {
  const keys = [...new Set(p.rows.map((r) => r.scenario))];
  const typical = (key) => {
    const runs = p.rows.filter((r) => r.scenario === key);
    return {
      /** Runs during which other processes took more than DISTURBED_CPU_PERCENT of a core. */
      disturbedRuns: runs.filter((r) => (r.otherCpuPercent ?? 0) > DISTURBED_CPU_PERCENT).length,
      rps: median(runs.map((r) => r.rps)),
      p50: median(runs.map((r) => r.p50)),
      p99: median(runs.map((r) => r.p99)),
      beatsPerCpuSecond: median(runs.map((r) => r.beatsPerCpuSecond)),
    };
  };
  const none = keys.includes('none') ? typical('none') : null;
  return keys.map((key) => {
    const runs = p.rows.filter((r) => r.scenario === key);
    const b = typical(key);
    const stops = runs.filter((r) => r.stops).map((r) => r.stops);
    return {
      scenario: key,
      label: runs[0].label,
      runs: runs.length,
      ...b,
      rpsRatio: none ? b.rps / none.rps : null,
      p99Delta: none ? b.p99 - none.p99 : null,
      costRatio: none && b.beatsPerCpuSecond && none.beatsPerCpuSecond ? b.beatsPerCpuSecond / none.beatsPerCpuSecond : null,
      hibernations: mean(runs.map((r) => r.hibernations.reported)),
      stopsSent: stops.length ? mean(stops.map((x) => x.requested)) : null,
      stopsDone: stops.length ? mean(stops.map((x) => x.stopped)) : null,
      stopsPending: stops.length ? mean(stops.map((x) => x.stopping)) : null,
      stopsRetrying: stops.length ? mean(stops.map((x) => x.retrying)) : null,
    };
  });
}

/** The provider target: the same load with no provider, a slow one and a dead one. */
export function providerTable(p) {
  const rounds = p.settings.rounds ?? 1;
  const summary = [
    `| scenario | beats/s | p50 ms | p99 ms | stops sent | stops done | stops pending | of which failed, retrying | ratio vs none | p99 vs none | beats per server CPU-second vs none |`,
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const x of providerSummary(p)) {
    const none = x.scenario === 'none';
    summary.push(
      `| ${x.label} | ${num(x.rps)} | ${ms(x.p50)} | ${ms(x.p99)} | ${x.stopsSent === null ? '–' : num(x.stopsSent)} | ${x.stopsDone === null ? '–' : num(x.stopsDone)} | ` +
        `${x.stopsPending === null ? '–' : num(x.stopsPending)} | ${x.stopsRetrying === null ? '–' : num(x.stopsRetrying)} | ` +
        `${none ? '1.00×' : `${num(x.rpsRatio, 2)}×`} | ${none ? '–' : signedMs(x.p99Delta)} | ${none ? '1.00×' : x.costRatio === null ? '–' : `${num(x.costRatio, 2)}×`} |`,
    );
  }
  const runs = [
    '| round | scenario | beats/s | p50 ms | p99 ms | max ms | vs none (same round) | hibernations | report beat p50 / p99 ms | stop calls sent | stops done | stops pending | failed, retrying | provider calls received | server CPU % | other processes CPU % | errors |',
    '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of p.rows) {
    const s = r.stops;
    const h = r.hibernations;
    const none = p.rows.find((x) => x.scenario === 'none' && x.round === r.round);
    runs.push(
      `| ${r.round ?? 1} | ${r.label} | ${num(r.rps)} | ${ms(r.p50)} | ${ms(r.p99)} | ${ms(r.max)} | ${ratio(r.rps, none?.rps)} | ` +
        `${num(h.reported)}${h.failed ? ` (${num(h.failed)} failed)` : ''} | ${ms(h.latency.report.p50)} / ${ms(h.latency.report.p99)} | ` +
        `${s ? num(s.requested) : '–'} | ${s ? num(s.stopped) : '–'} | ${s ? num(s.stopping) : '–'} | ${s ? num(s.retrying) : '–'} | ` +
        `${r.providerCalls ? num(r.providerCalls.received) : '–'} | ${num(r.cpuPercent)} | ${num(r.otherCpuPercent)} | ${num(r.errors + r.non2xx)} |`,
    );
  }
  const head =
    rounds > 1
      ? `Median of ${rounds} rounds per scenario (every run is listed below; ratios compare medians), stop counts the mean per run:\n\n`
      : '';
  return `${head}${summary.join('\n')}\n\nEach run:\n\n${runs.join('\n')}`;
}

/** The value target: one row per threshold, what Dumont reclaimed against the oracle. */
export function valueTable(v) {
  const lines = [
    '| threshold | oracle idle GPU-h | reclaimed GPU-h | share | of it inside the oracle\'s windows | hibernations | busy hibernations | regrets (woken < 60 min; the oracle\'s) | USD saved | oracle USD | wall s | inside share of an oracle at T + warning + 1 beat |',
    '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of v.rows) {
    const delayed = r.delayedOracleGpuHours ? `${num((r.insideGpuHours / r.delayedOracleGpuHours) * 100, 1)} % of ${num(r.delayedOracleGpuHours, 1)} (T + ${num(r.delayMinutes, 1)} min)` : '–';
    const inside = r.insideGpuHours === undefined ? '–' : `${num(r.insideGpuHours, 1)} (${num(r.insideSharePercent, 1)} %)`;
    lines.push(
      `| ${r.thresholdMinutes} min | ${num(r.oracleGpuHours, 1)} | ${num(r.reclaimedGpuHours, 1)} | ${r.sharePercent === null ? '–' : `${num(r.sharePercent, 1)} %`} | ${inside} | ` +
        `${num(r.hibernations)} | ${num(r.busyHibernations)} | ${num(r.regrets)}${r.oracleRegrets === undefined ? '' : ` (${num(r.oracleRegrets)})`} | ${num(r.usdSaved)} | ${num(r.oracleUsd)} | ${num(r.wallSeconds)} | ${delayed} |`,
    );
  }
  return lines.join('\n');
}

/** Per profile and threshold: where the share is lost. */
export function valueProfileTable(v) {
  const profiles = v.rows[0].byProfile.map((p) => p.profile);
  const head = `| profile (instances) | ${v.rows.map((r) => `T=${r.thresholdMinutes}: reclaimed (inside) / oracle GPU-h, stretches > T, hibernations, regrets`).join(' | ')} |`;
  const lines = [head, `|---|${v.rows.map(() => '---:').join('|')}|`];
  for (const p of profiles) {
    const cells = v.rows.map((r) => {
      const x = r.byProfile.find((y) => y.profile === p);
      const inside = x.insideGpuHours === undefined ? '' : ` (${num(x.insideGpuHours, 1)}${x.oracleGpuHours > 0 ? `, ${num((x.insideGpuHours / x.oracleGpuHours) * 100)} %` : ''})`;
      return `${num(x.reclaimedGpuHours, 1)}${inside} / ${num(x.oracleGpuHours, 1)}, ${num(x.oracleStretches)}, ${num(x.hibernations)}, ${num(x.regrets)}`;
    });
    lines.push(`| ${p} (${v.rows[0].byProfile.find((y) => y.profile === p).instances}) | ${cells.join(' | ')} |`);
  }
  return lines.join('\n');
}

/** Each target of the issue: met or not, and by how much. */
export function targetChecks(results) {
  const checks = [];
  const row = (name) => results.closedLoop.find((r) => r.target === name);
  const rate = (name) => results.fixedRate.find((r) => r.target === name);
  const check = (what, value, goal, ok, unit = '') =>
    checks.push({ what, value, goal, ok, line: `${ok ? 'PASS' : 'FAIL'} ${what}: ${value}${unit} (target ${goal}${unit})` });
  const node = row('node:http');
  const sqlite = row('dumont sqlite');
  const fsync = row('dumont sqlite fsync=always');
  const etcd = row('etcd');
  if (node && sqlite) {
    const share = (sqlite.rps / node.rps) * 100;
    check('SQLite throughput vs bare node:http', `${num(share, 1)} %`, '≥ 60 %', share >= 60);
  }
  if (fsync && etcd) {
    const x = fsync.rps / etcd.rps;
    check('SQLite at etcd durability (fsync every beat) vs etcd', `${num(x, 2)}×`, '≥ 1.5×', x >= 1.5);
  }
  const at = rate('dumont sqlite');
  if (at) check(`SQLite p99 at ${num(at.rate)} beats/s (open loop)`, ms(at.p99), '≤ 20', at.p99 <= 20 && at.answeredPerSecond >= at.rate * 0.98, ' ms');
  const pg1 = row('dumont postgres ×1');
  if (pg1) check('PostgreSQL, 1 replica', num(pg1.rps), '≥ 3,333', pg1.rps >= 3333, ' beats/s');
  const pg3 = row('dumont postgres ×3');
  if (pg3) check('PostgreSQL, 3 replicas', num(pg3.rps), '≥ 3,333', pg3.rps >= 3333, ' beats/s');
  const f = results.fleet;
  if (f && !f.missing) {
    const worstQuiet = Math.max(f.listQuiet.page.p99, f.listQuiet.idleFilter.p99, f.listQuiet.cursorMiddle.p99);
    const worstLoad = Math.max(f.listUnderLoad.page.p99, f.listUnderLoad.idleFilter.p99, f.listUnderLoad.cursorMiddle.p99);
    check(`${num(f.size)} instances: list page p99, quiet (worst of the three)`, ms(worstQuiet), '≤ 20', worstQuiet <= 20, ' ms');
    check(`${num(f.size)} instances: list page p99, steady round beating (worst of the three)`, ms(worstLoad), '≤ 20', worstLoad <= 20, ' ms');
    const steady = f.steadyRound;
    check(
      `${num(f.size)} instances beating every ${f.intervalSeconds} s (${num(f.beatsPerSecondAsked)}/s, open loop), steady round: beat p99`,
      ms(steady.p99),
      '≤ 20',
      steady.p99 <= 20 && steady.errors + steady.non2xx + steady.unanswered === 0,
      ' ms',
    );
    if (!f.sweep.missing) check(`${num(f.size)} instances: sweeper tick p99, nothing due`, ms(f.sweep.nothingDue.p99Ms), '≤ 5', f.sweep.nothingDue.p99Ms <= 5, ' ms');
    for (const d of f.sweep.due ?? []) {
      checks.push({ line: `INFO ${num(f.size)} instances: sweeper tick with ${num(d.due)} due: ${ms(d.meanMs)} ms (${ms(d.perInstanceMs)} ms per due instance)` });
    }
    check(`${num(f.size)} instances: server peak RSS`, num(f.serverPeakRssMb), '≤ 300', f.serverPeakRssMb <= 300, ' MB');
  }
  const p = results.provider;
  if (p?.rows?.some((r) => r.scenario === 'none')) {
    const summary = providerSummary(p);
    const none = summary.find((y) => y.scenario === 'none');
    for (const x of summary.filter((y) => y !== none)) {
      const of = x.runs > 1 ? ` (median of ${x.runs} rounds each)` : '';
      const disturbed = none.disturbedRuns + x.disturbedRuns;
      const note = disturbed
        ? ` — not a clean comparison: other processes took more than ${DISTURBED_CPU_PERCENT} % of a core during ${disturbed} of these ${none.runs + x.runs} runs`
        : '';
      check(`plain beats/s with ${x.label} vs provider none${of}`, `${num(x.rpsRatio * 100, 1)} %`, '≥ 90 %', x.rpsRatio >= 0.9);
      if (note) checks[checks.length - 1].line += note;
      check(`plain beat p99 with ${x.label} minus provider none${of}`, signedMs(x.p99Delta).replace(' ms', ''), `≤ +${PROVIDER_P99_MARGIN_MS}`, x.p99Delta <= PROVIDER_P99_MARGIN_MS, ' ms');
      // Were the provider call on the request path, the beat reporting the hibernation would wait for it:
      // every one at least the stand-in's delay (slow) or the provider timeout (hang).
      const runs = p.rows.filter((r) => r.scenario === x.scenario);
      const floorMs = x.scenario === 'hang' ? p.settings.providerTimeoutSeconds * 1000 : p.settings.slowMs;
      const reportP50 = Math.max(...runs.map((r) => r.hibernations.latency.report.p50 ?? Infinity));
      check(
        `beat that queues the stop, ${x.label}: p50 (worst round) below what a call on the request path would take`,
        ms(reportP50),
        `< ${num(floorMs)}`,
        reportP50 < floorMs,
        ' ms',
      );
      // What the scenario claims to exercise, it exercised: stops went out, or piled up behind a dead provider.
      checks.push({
        line:
          `INFO ${x.label}: ${num(x.hibernations)} hibernations confirmed by the agent; ${num(x.stopsSent)} stop calls sent, ${num(x.stopsDone)} done, ` +
          `${num(x.stopsPending)} pending at the end (${num(x.stopsRetrying)} failed and retrying); beats per server CPU-second ${num(x.costRatio, 2)}× of none`,
      });
    }
  }
  const v = results.value;
  if (v?.rows?.length) {
    for (const r of v.rows) {
      // Checked on the time reclaimed inside the oracle's windows: time off beyond them (a stopped
      // flaky machine never reports the unknown readings that cut the oracle's stretches) must not
      // make up for windows missed elsewhere.
      const share = r.insideSharePercent ?? r.sharePercent;
      check(
        `hibernation value at T=${r.thresholdMinutes} min: share of the oracle's idle GPU-hours reclaimed inside its windows (all off-time: ${num(r.sharePercent, 1)} %)`,
        num(share, 1),
        `≥ ${v.target.sharePercent}`,
        share >= v.target.sharePercent,
        ' %',
      );
      check(`hibernation value at T=${r.thresholdMinutes} min: busy hibernations`, num(r.busyHibernations), `= ${v.target.busyHibernations}`, r.busyHibernations <= v.target.busyHibernations);
    }
  }
  return checks;
}

/** The method of the value target, as the report states it next to its numbers. */
function valueText(v) {
  const s = v.settings;
  const mix = Object.entries(v.profiles)
    .map(([p, n]) => `${n} ${p}`)
    .join(', ');
  const cross = v.rows
    .map((r) => `T=${r.thresholdMinutes}: server ${num(r.reclaimedGpuHours, 2)} / own ${num(r.ownGpuHours, 2)} GPU-h, ${num(r.serverHibernations)} / ${num(r.hibernations)} hibernations`)
    .join('; ');
  const other = v.rows
    .map(
      (r) =>
        `T=${r.thresholdMinutes}: ${num(r.beats)} beats, ${num(r.commandsOnBusyBeat)} hibernate commands on a busy beat, ${num(r.guardRefusals)} refused by the agent's guard, ` +
        `${num(r.wakes)} wakes, ${num(r.stillOffAtEnd)} still hibernated at the end, ${num(r.errors)} HTTP errors`,
    )
    .join('; ');
  return (
    `${num(v.instances)} simulated instances (${num(v.gpus)} GPUs: ${mix}; seed ${v.seed}) over ${num(v.days)} simulated day${v.days === 1 ? '' : 's'} in ${v.stepSeconds} s steps, ` +
    `each threshold a separate run of the real server in-process (SQLite in a temp dir, real HTTP on loopback, provider \`${s.provider}\`, history ${s.history ? 'on' : 'off'}) ` +
    `on a manual clock moved in lock-step; the server's defaults otherwise: warning ${num(s.hibernationWarningSeconds)} s, idle below ${num(s.idleUtilizationPercent)} %, ` +
    `beats every ${num(s.heartbeatIntervalSeconds)} s, freshness ${num(s.freshnessSeconds)} s. ${v.parallel} runs at a time; ${num(v.wallSeconds)} s wall in all. ` +
    'Oracle: every maximal stretch where each GPU is known and below 5 %, no GPU process, no activity, no collector error, longer than T, reclaims (length − T) × GPUs. ' +
    'Reclaimed: hibernated GPU-hours from the savings API; inside the oracle\'s windows: the part of the time off that falls in some stretch\'s [start + T, end) (what the target is checked on). ' +
    'Busy hibernation: the trace shows demand (a GPU at 5 % or more, a GPU process or activity; the truth behind unknown readings) at the step the machine stopped.\n\n' +
    `${valueTable(v)}\n\nPer profile:\n\n${valueProfileTable(v)}\n\nCross-check (savings API vs the simulation's own off-time): ${cross}.\n\nAlso: ${other}.`
  );
}

export function markdownReport(results) {
  const parts = [];
  parts.push(`Command: \`${results.command}\` — ${results.finishedAt} — ${results.options.quick ? 'QUICK run (smoke test; not for comparison)' : 'full run'}`);
  const src = results.source;
  if (src) {
    parts.push(
      `Server: commit ${src.commit}${src.uncommittedServerFiles ? ` plus ${src.uncommittedServerFiles} uncommitted file(s) under packages/server/src or packages/protocol/src` : ''}.`,
    );
  }
  const m = results.machine;
  parts.push(
    `Machine: ${m.cpus} × ${m.cpuModel}, ${m.memoryGiB} GiB, Linux ${m.kernel}, Node ${m.node}; ` +
      `load before the run ${m.busyBeforeRunPercent} % busy (load average ${m.loadAverage.join(' ')}).`,
  );
  const o = results.options;
  parts.push(
    `Load: wrk 4.1 (1 thread, ${o.connections} connections, ${o.seconds} s after ${o.warmup} s warm-up) rotating over ${num(o.instances)} instances ` +
      '(own token, own body of 1–8 GPUs, timestamp increasing per instance); load generator and target share the machine\'s cores.',
  );
  if (results.closedLoop.length) parts.push(`### Heartbeat throughput (closed loop)\n\n${closedLoopTable(results.closedLoop)}`);
  if (results.fixedRate.length) {
    parts.push(
      `### Fixed rate (open loop, latency from each request's planned send time: no coordinated omission)\n\n${fixedRateTable(results.fixedRate)}`,
    );
  }
  if (results.provider) {
    const p = results.provider;
    const st = p.settings;
    parts.push(
      '### Provider calls off the heartbeat path\n\n' +
        `The same closed-loop load three times${(st.rounds ?? 1) > 1 ? ` in each of ${st.rounds} rounds (every other round in reverse order)` : ''}, each on a fresh Dumont on SQLite: wrk (${st.connections} connections, ${st.seconds} s after ${st.warmup} s warm-up) sends ` +
        `plain beats of the ${num(st.instances)} instances (default threshold: they never hibernate) while ${num(st.hibernationsPerSecond)} other instances a second hibernate ` +
        `(threshold ${num(st.hibernatorThresholdMinutes * 60_000)} ms, warning 0: an idle beat, an idle beat whose answer carries the hibernate command, a beat reporting it succeeded; ` +
        'then silent, as a stopped machine is). Provider `none`: that report hibernates the instance at once. `vast`: it queues a stop in the outbox, sent by the worker ' +
        `to a loopback stand-in for Vast.ai that answers 200 after ${num(st.slowMs)} ms, or never answers (DUMONT_PROVIDER_TIMEOUT_SECONDS=${st.providerTimeoutSeconds}, retried with backoff). ` +
        'Beats/s and latency are the plain beats (wrk); the report beat is the beat that queues the stop; stop counts are read from the detail and events APIs right after the measured seconds.\n\n' +
        providerTable(p),
    );
  }
  if (results.fleet && !results.fleet.missing) parts.push(`### ${num(results.fleet.size)} registered instances (SQLite)\n\n${fleetTable(results.fleet)}`);
  if (results.list && !results.list.missing) {
    const l = results.list;
    parts.push(
      `### Sorted and searched list, ${num(l.size)} instances (SQLite)\n\n` +
        `Written through the store in ${num(l.fillSeconds, 1)} s (mixed statuses, 1–8 GPUs, some never seen); a quiet server, ` +
        `${num(l.requests)} sequential requests per line on one keep-alive connection, admin key (every owner). ` +
        'Middle page: the keyset cursor of the row halfway through that order.\n\n' +
        listTable(l),
    );
  }
  if (results.agent) {
    // The agent's own report has headings of its own: nest them under this section's.
    const output = results.agent.output?.replace(/^(#{1,3}) /gm, '#### ');
    parts.push(`### Agent footprint\n\n${results.agent.missing ? `Not measured: ${results.agent.missing}.` : `From \`${results.agent.script}\`:\n\n${output}`}`);
  }
  if (results.value?.rows?.length) parts.push(`### Hibernation value (a simulated fleet against an oracle)\n\n${valueText(results.value)}`);
  const checks = targetChecks(results);
  if (checks.length) parts.push(`### Targets\n\n${checks.map((c) => `- ${c.line}`).join('\n')}`);
  if (results.skipped.length) parts.push(`### Skipped\n\n${results.skipped.map((s) => `- ${s.target}: ${s.reason}`).join('\n')}`);
  if (results.profiles?.length) parts.push(`### CPU profiles\n\n${results.profiles.map((p) => p.text).join('\n\n')}`);
  return parts.join('\n\n');
}

const BEGIN = '<!-- bench:begin (written by `npm run bench`; edit outside these markers) -->';
const END = '<!-- bench:end -->';

/** Replaces the generated block of docs/PERFORMANCE.md, keeping the hand-written text around it. */
export function writePerformanceDoc(path, markdown) {
  const block = `${BEGIN}\n\n${markdown}\n\n${END}`;
  if (!existsSync(path)) {
    writeFileSync(path, `# Performance\n\n${block}\n`);
    return;
  }
  const text = readFileSync(path, 'utf8');
  const start = text.indexOf('<!-- bench:begin');
  const end = text.indexOf(END);
  writeFileSync(path, start >= 0 && end > start ? `${text.slice(0, start)}${block}${text.slice(end + END.length)}` : `${text.trimEnd()}\n\n${block}\n`);
}
