/** Every fuzz target, by the name `--target` takes. @module */
import { allowedIpsTarget } from "./allowedips_target.ts";
import { configTarget } from "./config_target.ts";
import { deviceTarget } from "./device_target.ts";
import { ipTarget } from "./ip_target.ts";
import { offloadTarget } from "./offload_target.ts";
import { rateLimiterTarget } from "./ratelimiter_target.ts";
import { replayTarget } from "./replay_target.ts";
import { uapiTarget } from "./uapi_target.ts";
import type { TargetFactory } from "./target.ts";

export const TARGETS: [string, TargetFactory][] = [
  ["device", (p) => deviceTarget(p)],
  ["replay", (p) => replayTarget(p)],
  ["ratelimiter", rateLimiterTarget],
  ["allowedips", (p) => allowedIpsTarget(p)],
  ["ip", ipTarget],
  ["offload", offloadTarget],
  ["uapi", uapiTarget],
  ["config", configTarget],
];
