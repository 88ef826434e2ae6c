'use strict';
// DigitalOcean Functions entry point (Node.js runtime): runs the bundled static
// spaces-backup host once, with the function's environment (project.yml) and the
// invocation's configuration parameters, and returns its response envelope
// ({statusCode, body}), the original function's result.
//
// The component ships precompiled for the bundled host (spaces_backup.cwasm, made by
// build.sh), so a cold start loads machine code and compiles nothing.

const { spawn } = require('child_process');
const path = require('path');

// Another build may be used locally or in tests.
const BINARY = process.env.SPACES_BACKUP_BIN || path.join(__dirname, 'bin', 'spaces-backup');
const COMPONENT =
  process.env.SPACES_BACKUP_COMPONENT || path.join(__dirname, 'spaces_backup.cwasm');

// Settings a caller may change per invocation. Credentials come only from the function's
// environment, so a caller cannot make it sign with other keys.
const PARAMETERS = new Set([
  'SOURCE_BUCKET', 'SOURCE_REGION', 'SOURCE_ENDPOINT',
  'DEST_BUCKET', 'DEST_REGION', 'DEST_ENDPOINT',
  'ARCHIVE_PREFIX', 'PART_SIZE', 'CONCURRENCY', 'COMPRESSION', 'COMPRESSION_LEVEL',
  'MAX_RETRIES', 'TIMEOUT_SECONDS', 'LOG_LEVEL', 'MAX_MEMORY',
  'INCLUDE_PREFIXES', 'EXCLUDE', 'DRY_RUN', 'KEEP_LAST', 'KEEP_DAYS',
]);

// Time kept back from the platform's deadline for the host to abort its upload cleanly.
const ABORT_MARGIN_MS = 30000;

function failure(statusCode, message) {
  return { statusCode, body: { error: 'Backup failed', code: 'FunctionError', message } };
}

// What an invocation may ask for besides a backup: `action` (`backup`, the default,
// `verify` or `restore`), `archive` (its key), for `verify` a `mode` (`deep` or
// `integrity`), for `restore` `to` (BUCKET[/PREFIX]) and `overwrite`.
const ACTION_PARAMETERS = new Set(['action', 'archive', 'mode', 'to', 'overwrite']);

function command(args) {
  const action = String(args.action || 'backup');
  if (action === 'backup') return { argv: ['run', '--component', COMPONENT] };
  if (action === 'verify') {
    if (!args.archive) return { error: "action 'verify' needs the parameter 'archive' (its key)" };
    const argv = ['verify', '--component', COMPONENT, '--json', '--archive', String(args.archive)];
    if (args.mode === 'deep') argv.push('--deep');
    else if (args.mode === 'integrity') argv.push('--integrity');
    else if (args.mode) return { error: "'mode' is 'deep' or 'integrity'" };
    return { argv };
  }
  if (action === 'restore') {
    if (!args.archive || !args.to) {
      return { error: "action 'restore' needs the parameters 'archive' and 'to' (BUCKET[/PREFIX])" };
    }
    const argv = ['restore', '--component', COMPONENT, '--archive', String(args.archive),
      '--to', String(args.to)];
    if (args.overwrite === true || args.overwrite === 'true') argv.push('--overwrite');
    return { argv };
  }
  return { error: `unknown action '${action}': use 'backup', 'verify' or 'restore'` };
}

async function main(args) {
  args = args || {};
  const env = { ...process.env };
  const ignored = [];
  const { argv, error } = command(args);
  if (error) return { statusCode: 400, body: { error: 'Invalid request', code: 'InvalidRequest', message: error } };
  for (const [name, value] of Object.entries(args)) {
    if (name.startsWith('__ow_') || name.startsWith('http') || ACTION_PARAMETERS.has(name)) continue;
    if (PARAMETERS.has(name) && ['string', 'number', 'boolean'].includes(typeof value)) {
      env[name] = String(value);
    } else {
      ignored.push(name);
    }
  }
  // The function has 1 GB in all: leave room for Node.js and the host beside the component.
  if (!env.MAX_MEMORY) env.MAX_MEMORY = '768MiB';
  if (ignored.length > 0) {
    console.error(JSON.stringify({ level: 'warn', event: 'parameters_ignored', names: ignored }));
  }

  return new Promise((resolve) => {
    let child;
    try {
      child = spawn(BINARY, argv, {
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
    // Before the platform kills the function, ask the host to stop: it aborts its
    // multipart upload, so no partial archive or stray parts are left.
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
          resolve({
            statusCode: envelope.statusCode,
            headers: { 'Content-Type': 'application/json' },
            body: envelope.body,
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
