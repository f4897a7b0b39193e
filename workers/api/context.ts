import type { Principal } from "../shared/auth/principal";

/** Per-request values set by middleware and read by routes. */
export interface AppEnv {
  Bindings: Env;
  Variables: {
    requestId: string;
    principal: Principal | null;
  };
}
