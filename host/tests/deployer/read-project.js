'use strict';
// Reads a DigitalOcean Functions project the way `doctl serverless deploy` does, with
// the deployer library it grew from (@nimbella/nimbella-deployer, its readProject), and
// prints what the deploy would get: the error, or each function's runtime, limits,
// webSecure, annotations and environment. Usage: node read-project.js PROJECT_DIR
const deployer = require('@nimbella/nimbella-deployer');

// The runtimes DigitalOcean Functions offers (what the platform's API would answer).
const RUNTIMES = {
  nodejs: [
    { kind: 'nodejs:14', default: false },
    { kind: 'nodejs:18', default: false },
    { kind: 'nodejs:22', default: true },
    { kind: 'nodejs:24', default: false },
  ],
};

const quiet = { warnings: [], warn(...args) { this.warnings.push(args.join(' ')); }, progress() {} };

async function main() {
  const project = process.argv[2];
  const includer = deployer.makeIncluder(undefined, undefined);
  const read = await deployer.readProject(project, undefined, undefined, includer, false, quiet, RUNTIMES);
  if (read.error) {
    process.stdout.write(JSON.stringify({ error: String(read.error.message || read.error) }));
    return;
  }
  const functions = [];
  for (const pkg of read.packages || []) {
    for (const action of pkg.actions || []) {
      functions.push({
        name: `${pkg.name}/${action.name}`,
        runtime: action.runtime,
        main: action.main,
        web: action.web,
        webSecure: action.webSecure,
        limits: action.limits,
        annotations: action.annotations,
        environment: action.environment,
        triggers: action.triggers,
      });
    }
  }
  process.stdout.write(JSON.stringify({ functions }));
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ error: `readProject threw: ${e && e.message}` }));
});
