// The licence gate's judge (scripts/licenses.sh collects, this decides): checks the licences collected against the
// allow-list and scripts/licenses.clarify.json, prints the summary line and every offender, and exits 1 on any.
// Modes: npm <checker.json> <package-lock.json> <package.json> <seconds> | go <label> <report.tsv> <seconds>
// Environment: ALLOWED and DATA_ONLY (space-separated SPDX ids), CLARIFY (the clarifications file).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';

const [mode, ...args] = process.argv.slice(2);
const allowed = new Set(process.env.ALLOWED.split(' '));
const dataOnly = new Set(process.env.DATA_ONLY.split(' '));
const clarify = JSON.parse(readFileSync(process.env.CLARIFY, 'utf8'));
const readJson = file => JSON.parse(readFileSync(file, 'utf8'));
// The checker's own SPDX parser, resolved from the checker so that npm's hoisting does not matter.
const parse = createRequire(path.resolve('node_modules/license-checker-rseidelsohn/package.json'))('spdx-expression-parse');

// An expression passes when each side of an AND and at least one side of an OR is accepted. WITH exceptions and
// "or later" only add permissions, so the base licence decides.
const permits = (node, isData) =>
  node.license
    ? allowed.has(node.license) || (isData && dataOnly.has(node.license))
    : node.conjunction === 'or'
      ? permits(node.left, isData) || permits(node.right, isData)
      : permits(node.left, isData) && permits(node.right, isData);

// Returns why the licence is refused, or null when it is fine.
function refusal(licence, isData) {
  if (licence && typeof licence === 'object' && !Array.isArray(licence)) licence = licence.type; // old { type, url } form
  if (Array.isArray(licence)) return licence.map(l => refusal(l, isData)).find(Boolean) ?? null; // old "licenses" list: all must pass
  if (licence == null || licence === '' || /^(UNKNOWN|Unknown)$/.test(licence)) return 'no licence found';
  if (licence.endsWith('*')) return 'licence only guessed from its files: check it and add a clarification';
  let tree;
  try {
    tree = parse(licence);
  } catch {
    return 'not an SPDX licence expression';
  }
  if (permits(tree, isData)) return null;
  return permits(tree, true) ? 'CC-BY is accepted only for the data packages named in npmDataOnly' : 'not a permissive licence';
}

// A clarification replaces the metadata, but its stated licence is judged like any other.
function judge(table, id, licence, isData) {
  const clarified = table[id];
  if (!clarified) return { licence, why: refusal(licence, isData) };
  clarified.used = true;
  return { licence: `${clarified.license} (clarified)`, why: refusal(clarified.license, isData), clarified: true };
}

const bad = [];
const notes = [];
const clarifiedIds = [];
const record = (id, verdict) => {
  if (verdict.clarified) clarifiedIds.push(id);
  if (verdict.why) bad.push(`  ${id}: ${[verdict.licence].flat().join(', ') || '(none)'}: ${verdict.why}`);
};
const unused = table => Object.keys(table).filter(id => !table[id].used);

if (mode === 'npm') {
  const [checkerJson, lockFile, packageJson, seconds] = args;
  const self = readJson(packageJson);
  const installed = readJson(checkerJson);
  const lock = readJson(lockFile);
  if (!lock.packages) throw new Error(`${lockFile}: lockfileVersion 2 or later needed`);
  const isData = name => Object.hasOwn(clarify.npmDataOnly, name);
  const nameOf = id => id.slice(0, id.lastIndexOf('@'));

  let nInstalled = 0;
  for (const [id, info] of Object.entries(installed)) {
    if (id === `${self.name}@${self.version}`) continue; // Palaver itself
    nInstalled++;
    record(id, judge(clarify.npm, id, info.licenses, isData(nameOf(id))));
  }
  // Entries the checker did not see: optional packages for other platforms, which npm does not install here.
  const lockOnly = new Set();
  for (const [key, entry] of Object.entries(lock.packages)) {
    if (key === '' || entry.link) continue; // the root is Palaver; a link's target has its own entry
    const name = entry.name ?? key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
    const id = `${name}@${entry.version}`;
    if (Object.hasOwn(installed, id) || lockOnly.has(id)) continue;
    lockOnly.add(id);
    record(id, judge(clarify.npm, id, entry.license, isData(name)));
  }
  if (nInstalled === 0) bad.push('  license-checker-rseidelsohn found no installed packages: run npm ci first');
  console.log(
    `npm: ${nInstalled} installed packages (license-checker-rseidelsohn) + ${lockOnly.size} not installed on this platform (package-lock.json), ${seconds}s` +
      `${clarifiedIds.length ? `, clarified: ${clarifiedIds.join(' ')}` : ''}: ${bad.length ? 'FAILED' : 'ok'}`
  );
  for (const id of unused(clarify.npm)) notes.push(`  note: clarification ${id} matches no package any more: remove it`);
} else if (mode === 'go') {
  const [label, report, seconds] = args;
  const modcache = process.env.GOMODCACHE;
  // go-licenses names licences as its classifier does: SPDX ids, but for these.
  const spdxOf = { 'GNU-All-permissive-Copying-License': 'FSFAP' };
  const goRefusal = name =>
    name === 'Unknown' ? 'no licence found' : allowed.has(spdxOf[name] ?? name) ? null : 'not a permissive licence';
  // A Go clarification names a module (or package) path and version, and covers the libraries under that path.
  const clarificationFor = (name, version) =>
    Object.keys(clarify.go).find(key => {
      const at = key.lastIndexOf('@');
      const [base, pinned] = [key.slice(0, at), key.slice(at + 1)];
      return pinned === version && (name === base || name.startsWith(`${base}/`));
    });
  const libraries = new Map(); // go-licenses' unit: the packages under one licence file, with one row per licence in it
  const modules = new Set();
  for (const line of readFileSync(report, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const [name, version, licence, file] = line.split('\t');
    const id = `${name}@${version}`;
    if (!libraries.has(id)) libraries.set(id, { name, version, file, licences: [] });
    libraries.get(id).licences.push(licence);
  }
  for (const [id, { name, version, file, licences }] of libraries) {
    const key = clarificationFor(name, version);
    // For counting, a module is the module-cache directory (module@version) holding the licence file, else the
    // clarification that covers the library, else the library itself.
    const rel = file.startsWith(`${modcache}/`) ? path.relative(modcache, file).split('/') : [];
    const at = rel.findIndex(part => part.includes('@'));
    modules.add(at >= 0 ? rel.slice(0, at + 1).join('/') : (key ?? id));
    if (key) {
      clarify.go[key].used = true;
      if (!clarifiedIds.includes(key)) clarifiedIds.push(key);
      const why = refusal(clarify.go[key].license, false);
      if (why) record(id, { licence: `${clarify.go[key].license} (clarified as ${key})`, why });
      continue;
    }
    const refused = licences.filter(goRefusal);
    if (refused.length) record(id, { licence: refused, why: goRefusal(refused[0]) });
  }
  // A go-licenses that cannot tell our modules from the standard library reports nothing at all: never a pass.
  if (libraries.size === 0) bad.push('  go-licenses reported no libraries: is GOROOT set?');
  console.log(
    `go ${label}: ${libraries.size} libraries in ${modules.size} modules (go-licenses, ${seconds}s)` +
      `${clarifiedIds.length ? `, clarified: ${clarifiedIds.join(' ')}` : ''}: ${bad.length ? 'FAILED' : 'ok'}`
  );
} else {
  throw new Error(`unknown mode ${mode}`);
}
for (const line of [...bad, ...notes]) console.log(line);
process.exitCode = bad.length ? 1 : 0;
