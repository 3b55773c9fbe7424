/**
 * volreg's embedded MongoDB-wire-compatible engine. Public API:
 * startEngine() for tests and `volreg serve`, runStandalone() for `volreg db`.
 */
export { startEngine, type EngineOptions, type RunningEngine } from './engine.ts';
export { newChangeMarks, readChangeMarks, changeMarkSlot, type ChangeMarksOptions } from './change-marks.ts';
export { runStandalone } from './standalone.ts';
export { holdsDatabase } from './persistence.ts';
export { DbPathLockedError } from './lock.ts';
