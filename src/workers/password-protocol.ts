/** Messages between off-thread-passwords.ts and password-worker.ts. */
export interface PasswordRequest {
  id: number;
  password: string;
  hash: string;
}

export interface PasswordReply {
  id: number;
  ok: boolean;
}
