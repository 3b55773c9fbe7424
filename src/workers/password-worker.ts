import { parentPort } from 'node:worker_threads';
import bcrypt from 'bcryptjs';
import type { PasswordReply, PasswordRequest } from './password-protocol.ts';

/** The worker side of off-thread-passwords.ts: one bcrypt comparison per message, in order. */
const port = parentPort!;
port.on('message', (m: PasswordRequest) => {
  let ok = false;
  try {
    ok = bcrypt.compareSync(m.password, m.hash);
  } catch {
    // a hash bcryptjs cannot read matches nothing
  }
  port.postMessage({ id: m.id, ok } satisfies PasswordReply);
});
