/** Exit codes of the volreg command (the README lists them). */
export const EXIT = {
  OK: 0,
  /** a runtime failure: cannot start (MongoDB unreachable, port in use), a failed migration */
  FAILURE: 1,
  /** bad configuration or bad command-line usage */
  USAGE: 2,
} as const;
