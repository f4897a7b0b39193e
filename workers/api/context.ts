import type { Principal } from "../shared/auth/principal";
import type { Logger } from "../shared/observability/logger";
import type { TraceContext } from "../shared/observability/trace";

/** Per-request values set by middleware and read by routes. */
export interface AppEnv {
  Bindings: Env;
  Variables: {
    requestId: string;
    /** This request's span of the caller's W3C trace (or of a new one). */
    trace: TraceContext;
    log: Logger;
    principal: Principal | null;
  };
}
