#!/usr/bin/env node
// The volreg command: runs src/cli/main.ts through tsx's loader, registered in this process,
// so `npx volreg ...` and `./bin/volreg.js ...` work from any directory.
import { register } from 'tsx/esm/api';

register();
const { run } = await import('../src/cli/main.ts');
await run(process.argv);
