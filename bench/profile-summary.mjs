// Prints the top self-time functions and modules of V8 .cpuprofile files: node bench/profile-summary.mjs FILE…
import { formatProfile, summarizeProfile } from './lib/cpu-profile.mjs';

const files = process.argv.slice(2);
if (files.length === 0) {
  process.stderr.write('usage: node bench/profile-summary.mjs FILE.cpuprofile…\n');
  process.exit(2);
}
for (const file of files) process.stdout.write(`${formatProfile(summarizeProfile(file, 20))}\n\n`);
