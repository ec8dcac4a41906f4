// Builds the console into vm_agent/console/static/: the bundled script, the stylesheets, the page.
// Usage: node build.mjs [--outdir DIR]. scripts/build-console.sh runs it (after npm ci) when the
// sources changed.
import { build } from 'esbuild';
import { copyFile, mkdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const flag = process.argv.indexOf('--outdir');
const outdir = resolve(flag > 0 ? process.argv[flag + 1] : join(here, '..', 'vm_agent', 'console', 'static'));

await rm(outdir, { recursive: true, force: true });
await mkdir(outdir, { recursive: true });
await build({
  entryPoints: [join(here, 'src', 'main.ts')],
  bundle: true,
  format: 'esm',
  target: ['chrome110', 'firefox115', 'safari16.4'],
  minify: true,
  legalComments: 'linked',
  outfile: join(outdir, 'console.js'),
  logLevel: 'warning',
});
await copyFile(join(here, 'node_modules', '@xterm', 'xterm', 'css', 'xterm.css'), join(outdir, 'xterm.css'));
await copyFile(join(here, 'console.css'), join(outdir, 'console.css'));
await copyFile(join(here, 'favicon.svg'), join(outdir, 'favicon.svg'));
await copyFile(join(here, 'index.html'), join(outdir, 'index.html'));
await writeFile(join(outdir, 'README'), 'Built by scripts/build-console.sh from web/; not committed.\n');
console.log(`console built into ${outdir}`);
