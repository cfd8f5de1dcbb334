/** How a simulated host behaves over time. */
export const PROFILES = ['busy', 'idle', 'bursty', 'diurnal', 'goes-offline', 'flaky'] as const;
export type ProfileName = (typeof PROFILES)[number];

export type ProfileMix = Readonly<Record<ProfileName, number>>;

/** A fleet where most hosts work, a fifth sit idle (the ones Dumont exists for), and the rest vary. */
export const DEFAULT_MIX: ProfileMix = {
  busy: 35,
  idle: 20,
  bursty: 15,
  diurnal: 15,
  'goes-offline': 10,
  flaky: 5,
};

/** Parses `busy=3,idle=1` (profiles not named get weight 0). Throws on unknown names or bad weights. */
export function parseMix(text: string): ProfileMix {
  const mix: Record<ProfileName, number> = { busy: 0, idle: 0, bursty: 0, diurnal: 0, 'goes-offline': 0, flaky: 0 };
  for (const part of text.split(',').map((p) => p.trim()).filter(Boolean)) {
    const [name, raw] = part.split('=');
    if (!PROFILES.includes(name as ProfileName)) {
      throw new Error(`unknown profile "${name}" (one of ${PROFILES.join(', ')})`);
    }
    const weight = raw === undefined ? 1 : Number(raw);
    if (!Number.isFinite(weight) || weight < 0) throw new Error(`profile ${name}: weight must be a number ≥ 0`);
    mix[name as ProfileName] = weight;
  }
  if (Object.values(mix).every((w) => w === 0)) throw new Error('the profile mix must give some profile a weight above 0');
  return mix;
}

export function mixEntries(mix: ProfileMix): Array<readonly [ProfileName, number]> {
  return PROFILES.map((p) => [p, mix[p]] as const).filter(([, w]) => w > 0);
}
