import { Worker, type ResourceLimits } from 'node:worker_threads';

/**
 * tsx's API for a worker of a project run from its sources, resolved once as this module loads:
 * a resolution made while the process has no file descriptor free (a worker started then fails
 * anyway) reads no package.json, and Node keeps that answer, so every later worker would import
 * a path that does not exist.
 */
const tsxApi = import.meta.url.endsWith('.ts') ? import.meta.resolve('tsx/esm/api') : null;

/**
 * Starts a worker thread running a module of this project, however the project was started:
 * compiled (`dist/`, plain .js) or from the sources through tsx (tests, the CLI), where the
 * worker must register tsx itself because the parent's `--import` does not reach it.
 * `sibling` is the module's path relative to `from` (an `import.meta.url`), without extension.
 */
export function startModuleWorker(from: string, sibling: string, workerData: unknown, resourceLimits?: ResourceLimits): Worker {
  const fromTs = from.endsWith('.ts');
  const url = new URL(`${sibling}${fromTs ? '.ts' : '.js'}`, from).href;
  // Resolved here: an evaluated worker would resolve a bare name against the working directory.
  const load = fromTs
    ? `import(${JSON.stringify(tsxApi ?? import.meta.resolve('tsx/esm/api'))}).then(({ register }) => { register(); return import(${JSON.stringify(url)}); })`
    : `import(${JSON.stringify(url)})`;
  // A failed import rejects inside the worker: rethrown so the parent sees an 'error' event.
  return new Worker(`${load}.catch((err) => { setImmediate(() => { throw err; }); });`, { eval: true, execArgv: [], workerData, resourceLimits });
}
