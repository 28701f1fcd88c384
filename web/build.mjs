// Builds web/dist: the hand-written app from src/ and the two player
// libraries from node_modules (pinned by package-lock.json), in the layout
// the server serves: /  -> index.html, /assets/{file}, /assets/{gifts,vendor}/{file}.
import { cpSync, existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, 'dist');
const require = createRequire(import.meta.url);

const vendor = {
  'hls.min.js': 'hls.js/dist/hls.min.js',
  'mpegts.js': 'mpegts.js/dist/mpegts.js',
};

rmSync(dist, { recursive: true, force: true });
mkdirSync(join(dist, 'vendor'), { recursive: true });
cpSync(join(root, 'src'), dist, { recursive: true });
for (const [name, spec] of Object.entries(vendor)) {
  let from;
  try {
    from = require.resolve(spec);
  } catch {
    console.error(`build: ${spec} is missing: run \`npm ci\` in web/ first`);
    process.exit(1);
  }
  cpSync(from, join(dist, 'vendor', name));
}
const versions = Object.fromEntries(
  ['hls.js', 'mpegts.js'].map((p) => [p, require(`${p}/package.json`).version]),
);
writeFileSync(join(dist, 'build.json'), JSON.stringify({ built_at: new Date().toISOString(), versions }, null, 2));
if (!existsSync(join(dist, 'index.html'))) {
  console.error('build: index.html missing from src/');
  process.exit(1);
}
console.log(`build: web/dist ready (hls.js ${versions['hls.js']}, mpegts.js ${versions['mpegts.js']})`);
