import { pino, type Logger } from "pino";

/** The process-wide root logger; level from KAKTUS_LOG_LEVEL (info by default). */
export const rootLogger: Logger = pino({
  level: process.env.KAKTUS_LOG_LEVEL ?? "info",
  base: { app: "kaktus-operator" },
});

/** One child logger per component (controller, host adapter), so every line says where it came from. */
export const componentLogger = (component: string): Logger => rootLogger.child({ component });
