'use strict';
// DigitalOcean Functions entry point (Node.js runtime): runs the bundled static
// spaces-backup host once, with the function's environment (project.yml) and the
// invocation's configuration parameters, and returns its response envelope
// ({statusCode, body}), the original function's result.
//
// The component ships precompiled for the bundled host (spaces_backup.cwasm, made by
// build.sh), so a cold start loads machine code and compiles nothing.

const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

// Another build may be used locally or in tests.
const BINARY = process.env.SPACES_BACKUP_BIN || path.join(__dirname, 'bin', 'spaces-backup');
const COMPONENT =
  process.env.SPACES_BACKUP_COMPONENT || path.join(__dirname, 'spaces_backup.cwasm');

// Who may change what. Endpoints, buckets, the archive prefix, retention, credentials,
// memory and the tokens come from the deployed environment alone: a caller who could set
// them could send the bucket elsewhere, delete the backup history, or sign with other
// keys. A caller may set only what the owner lists in ALLOW_PARAMETERS (default:
// DRY_RUN and LOG_LEVEL), from the settings that neither send data elsewhere nor delete
// anything. Anything else is refused, by name, before any request is sent.
const OWNER_ONLY = new Set([
  'SOURCE_BUCKET', 'SOURCE_REGION', 'SOURCE_ENDPOINT',
  'DEST_BUCKET', 'DEST_REGION', 'DEST_ENDPOINT',
  'ARCHIVE_PREFIX', 'KEEP_LAST', 'KEEP_DAYS', 'MAX_MEMORY', 'EQUAL_PARTS', 'SSL_CERT_FILE',
  'DISCARD_CHECKPOINT', 'CONTINUE',
  'SPACES_KEY', 'SPACES_SECRET', 'BACKUP_TOKEN', 'RESTORE_TOKEN', 'WEB_SECRET',
  'ALLOW_PARAMETERS', 'ALLOW_RESTORE',
]);
const MAY_ALLOW = new Set([
  'DRY_RUN', 'LOG_LEVEL', 'INCLUDE_PREFIXES', 'EXCLUDE', 'PART_SIZE', 'CONCURRENCY', 'PARTS_IN_FLIGHT',
  'COMPRESSION', 'COMPRESSION_LEVEL', 'MAX_RETRIES', 'TIMEOUT_SECONDS', 'MAX_RUN_SECONDS',
  'CHECKPOINT_SECONDS',
]);
const DEFAULT_ALLOWED = 'DRY_RUN,LOG_LEVEL';
// The wrapper's own settings, which the host does not need.
// The platform's key (for continuing a backup) stays with the wrapper too.
const WRAPPER_ONLY = ['WEB_SECRET', 'ALLOW_PARAMETERS', 'ALLOW_RESTORE', 'CONTINUE', '__OW_API_KEY'];

// The parameters the owner allows, or the error in ALLOW_PARAMETERS.
function allowedParameters(env) {
  const text = (env.ALLOW_PARAMETERS || '').trim() || DEFAULT_ALLOWED;
  const names = text.split(',').map((n) => n.trim()).filter((n) => n.length > 0);
  for (const name of names) {
    if (!MAY_ALLOW.has(name)) {
      const why = OWNER_ONLY.has(name)
        ? 'only the deployed environment may set it'
        : `it is not a setting an invocation may change (${[...MAY_ALLOW].join(', ')})`;
      return { error: `ALLOW_PARAMETERS lists '${name}', but ${why}` };
    }
  }
  return { allowed: new Set(names) };
}

// Why a parameter is refused, or null when it may be used.
function refusal(name, value, allowed) {
  if (OWNER_ONLY.has(name)) {
    return `the parameter '${name}' is refused: only the function's deployed environment sets ` +
      'endpoints, buckets, the archive prefix, retention, credentials, memory and tokens';
  }
  if (MAY_ALLOW.has(name) && !allowed.has(name)) {
    return `the parameter '${name}' is refused: the owner may allow it with ` +
      `ALLOW_PARAMETERS (now ${[...allowed].join(',')})`;
  }
  if (!MAY_ALLOW.has(name)) {
    return `unknown parameter '${name}'`;
  }
  if (!['string', 'number', 'boolean'].includes(typeof value)) {
    return `the parameter '${name}' must be a string, a number or a boolean`;
  }
  return null;
}

// Time kept back from the platform's deadline for the host to abort its upload cleanly.
const ABORT_MARGIN_MS = 30000;

// The bundled host is a static x86_64 Linux binary.
let archLogged = false;
function checkArch() {
  if (!archLogged) {
    console.error(JSON.stringify({ level: 'info', event: 'function_start', arch: process.arch, node: process.version }));
    archLogged = true;
  }
  if (process.arch !== 'x64') {
    return `this function's host binary is built for x86_64 Linux, but the runtime is ${process.arch}`;
  }
  return null;
}

// The binary to run: BINARY itself when it may be executed; otherwise (a runtime that
// unpacks the package without the exec bit) a copy in the temporary folder with mode 0755.
function executable(binary) {
  try {
    fs.accessSync(binary, fs.constants.X_OK);
    return binary;
  } catch (_) {
    // Copied below.
  }
  // One copy per build, kept for the next invocations of a warm container.
  const stat = fs.statSync(binary);
  const copy = path.join(os.tmpdir(), `spaces-backup-${stat.size}-${Math.round(stat.mtimeMs)}`);
  try {
    fs.accessSync(copy, fs.constants.X_OK);
    return copy;
  } catch (_) {
    // Not there yet.
  }
  const partial = `${copy}.${process.pid}`;
  fs.copyFileSync(binary, partial);
  fs.chmodSync(partial, 0o755);
  fs.renameSync(partial, copy);
  return copy;
}

// A backup that stops at its deadline with a checkpoint ("status": "continuing") is
// continued by invoking this function again, asynchronously, through the platform's REST
// API with the action's own key (the `provide-api-key` annotation in project.yml) and the
// same parameters, so one scheduled trigger completes a backup of any size. CONTINUE=false
// leaves the next run to the next trigger. Every run archives at least one object, so a
// chain ends; MAX_CHAIN_RUNS bounds it all the same.
const MAX_CHAIN_RUNS = 1000;
const CONTINUE_TIMEOUT_MS = 15000;

// CONTINUE as a boolean, or the error in it.
function continueSetting(env) {
  const v = String(env.CONTINUE || '').trim().toLowerCase();
  if (v === '' || v === 'true') return { on: true };
  if (v === 'false') return { on: false };
  return { error: `CONTINUE is 'true' or 'false', not '${env.CONTINUE}'` };
}

// Invokes this action again without waiting for it; returns what the response reports.
async function continueChain(env, params, runs) {
  if (runs >= MAX_CHAIN_RUNS) {
    return { error: `the backup has taken ${runs} runs, the most one chain may take: ` +
      'the next scheduled run continues it' };
  }
  const host = env.__OW_API_HOST;
  const key = env.__OW_API_KEY;
  const action = env.__OW_ACTION_NAME || '';
  const parts = action.split('/').filter((p) => p.length > 0);
  if (!host || !key || parts.length < 2) {
    return { error: 'the function has no API key to invoke itself (set the annotation ' +
      "'provide-api-key: true', as host/function/project.yml does): the next scheduled run continues the backup" };
  }
  const [namespace, ...name] = parts;
  const url = `${host.replace(/\/+$/, '')}/api/v1/namespaces/${encodeURIComponent(namespace)}` +
    `/actions/${name.map(encodeURIComponent).join('/')}?blocking=false`;
  try {
    const res = await fetch(url, {
      method: 'POST',
      headers: {
        Authorization: `Basic ${Buffer.from(key).toString('base64')}`,
        'Content-Type': 'application/json',
      },
      body: JSON.stringify(params),
      signal: AbortSignal.timeout(CONTINUE_TIMEOUT_MS),
    });
    const text = await res.text();
    if (res.status !== 202 && res.status !== 200) {
      return { error: `invoking ${action} to continue answered HTTP ${res.status}: ` +
        `${text.slice(0, 300)}; the next scheduled run continues the backup` };
    }
    let activationId = null;
    try { activationId = JSON.parse(text).activationId || null; } catch (_) { /* none */ }
    return { activationId };
  } catch (e) {
    return { error: `invoking ${action} to continue failed (${e.name}: ${e.message}); ` +
      'the next scheduled run continues the backup' };
  }
}

function failure(statusCode, message) {
  return { statusCode, body: { error: 'Backup failed', code: 'FunctionError', message } };
}

function invalid(statusCode, code, message) {
  return { statusCode, body: { error: 'Invalid request', code, message } };
}

// What an invocation may ask for besides a backup: `action` (`backup`, the default,
// `plan`, `compose`, `verify` or `restore`), `archive` (its key), for `verify` a `mode`
// (`deep` or `integrity`), for `restore` `to` (BUCKET[/PREFIX]), `overwrite` and
// `bucketSettings` (also apply the bucket's recorded CORS, lifecycle, policy, versioning). A
// sharded backup is `plan` with `shards` (N), then `backup` with `shard` ("i/N") for each
// i, then `compose`. A restore writes over a bucket: it is off unless the owner sets
// ALLOW_RESTORE=true.
const ACTION_PARAMETERS = new Set([
  'action', 'archive', 'mode', 'to', 'overwrite', 'bucketSettings', 'shards', 'shard',
]);

function command(args) {
  const action = String(args.action || 'backup');
  if (action === 'backup') {
    if (args.shard !== undefined && !/^\s*\d+\s*\/\s*\d+\s*$/.test(String(args.shard))) {
      return { error: "'shard' is INDEX/COUNT, e.g. \"3/16\"" };
    }
    return { argv: ['run', '--component', COMPONENT] };
  }
  if (action === 'plan') {
    const argv = ['plan', '--component', COMPONENT];
    if (args.shards !== undefined) {
      const n = Number(args.shards);
      if (!Number.isInteger(n) || n < 1 || n > 1000) return { error: "'shards' is a number from 1 to 1000" };
      argv.push('--shards', String(n));
    }
    return { argv };
  }
  if (action === 'compose') return { argv: ['compose', '--component', COMPONENT] };
  if (action === 'verify') {
    if (!args.archive) return { error: "action 'verify' needs the parameter 'archive' (its key)" };
    const argv = ['verify', '--component', COMPONENT, '--json', '--archive', String(args.archive)];
    if (args.mode === 'deep') argv.push('--deep');
    else if (args.mode === 'integrity') argv.push('--integrity');
    else if (args.mode) return { error: "'mode' is 'deep' or 'integrity'" };
    return { argv };
  }
  if (action === 'restore') {
    if (String(process.env.ALLOW_RESTORE || '').trim().toLowerCase() !== 'true') {
      return {
        status: 403,
        code: 'RestoreNotAllowed',
        error: "restore by invocation is off: the owner may enable it with ALLOW_RESTORE=true in the function's environment",
      };
    }
    if (!args.archive || !args.to) {
      return { error: "action 'restore' needs the parameters 'archive' and 'to' (BUCKET[/PREFIX])" };
    }
    const argv = ['restore', '--component', COMPONENT, '--archive', String(args.archive),
      '--to', String(args.to)];
    if (args.overwrite === true || args.overwrite === 'true') argv.push('--overwrite');
    if (args.bucketSettings === true || args.bucketSettings === 'true') argv.push('--bucket-settings');
    return { argv };
  }
  return { error: `unknown action '${action}': use 'backup', 'plan', 'compose', 'verify' or 'restore'` };
}

async function main(args) {
  args = args || {};
  const env = { ...process.env };
  const { allowed, error: misconfigured } = allowedParameters(env);
  if (misconfigured) return invalid(500, 'InvalidConfiguration', misconfigured);
  const chain = continueSetting(env);
  if (chain.error) return invalid(500, 'InvalidConfiguration', chain.error);
  const { argv, error, status, code } = command(args);
  if (error) return invalid(status || 400, code || 'InvalidRequest', error);
  // What a continuing run passes on to the next: the same request, without the
  // platform's details.
  const passOn = {};
  for (const [name, value] of Object.entries(args)) {
    // The platform's own details of a web call (`__ow_*`, DigitalOcean's `http`).
    if (name.startsWith('__ow_') || name.startsWith('http')) continue;
    passOn[name] = value;
    // The shard this run backs up, for the host as SHARD.
    if (name === 'shard') env.SHARD = String(value).replace(/\s+/g, '');
    if (ACTION_PARAMETERS.has(name)) continue;
    const refused = refusal(name, value, allowed);
    if (refused) {
      console.error(JSON.stringify({ level: 'warn', event: 'parameter_refused', name }));
      return invalid(400, 'ParameterNotAllowed', refused);
    }
    env[name] = String(value);
  }
  for (const name of WRAPPER_ONLY) delete env[name];
  // The function has 1 GB in all: leave room for Node.js and the host beside the component.
  if (!env.MAX_MEMORY) env.MAX_MEMORY = '768MiB';

  const wrongArch = checkArch();
  if (wrongArch) return failure(500, wrongArch);
  return new Promise((resolve) => {
    let child;
    try {
      child = spawn(executable(BINARY), argv, {
        env,
        cwd: __dirname,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (e) {
      resolve(failure(500, `cannot start ${BINARY}: ${e.message}`));
      return;
    }
    let stdout = '';
    let stderrTail = '';
    child.stdout.on('data', (d) => { stdout += d; });
    // The host's JSON log lines go to the activation log as they come.
    child.stderr.on('data', (d) => {
      process.stderr.write(d);
      stderrTail = (stderrTail + d).slice(-2000);
    });
    // The host stops well before the platform's deadline (__OW_DEADLINE, passed on in its
    // environment) with a checkpoint, and the next invocation continues the archive. If
    // it is still running this close to the end, ask it to stop: it aborts its upload, or
    // keeps it for the next run when a checkpoint holds the earlier work.
    const deadline = Number(process.env.__OW_DEADLINE || 0);
    let timer = null;
    if (deadline > 0) {
      const wait = Math.max(0, deadline - Date.now() - ABORT_MARGIN_MS);
      timer = setTimeout(() => child.kill('SIGTERM'), wait);
    }
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      resolve(failure(500, `cannot run ${BINARY}: ${e.message}`));
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      const line = stdout.trim().split('\n').pop() || '';
      try {
        const envelope = JSON.parse(line);
        if (typeof envelope.statusCode === 'number' && envelope.body !== undefined) {
          const answer = {
            statusCode: envelope.statusCode,
            headers: { 'Content-Type': 'application/json' },
            body: envelope.body,
          };
          const continuing = argv[0] === 'run' && envelope.statusCode === 202 &&
            envelope.body && envelope.body.status === 'continuing';
          if (!continuing || !chain.on) {
            resolve(answer);
            return;
          }
          continueChain(process.env, passOn, Number(envelope.body.runs) || 0).then((next) => {
            answer.body = { ...envelope.body, continuation: next };
            const event = next.error ? 'continue_failed' : 'continued';
            console.error(JSON.stringify({ level: next.error ? 'warn' : 'info', event, ...next }));
            resolve(answer);
          });
          return;
        }
      } catch (_) {
        // fall through: no envelope
      }
      const how = signal ? `signal ${signal}` : `exit code ${code}`;
      const last = stderrTail.trim().split('\n').pop() || '';
      resolve(failure(500, `the backup host ended with ${how} and no response: ${last}`));
    });
  });
}

exports.main = main;
