// ramp: the total send rate climbs through STEPS (sends/s, comma-separated), STEP_S seconds each, until the p99
// delivery latency of a step passes 500 ms (that step's threshold aborts the test). Each message carries its step's
// rate, so late deliveries count against the step that sent them. The runner reports the knee: the highest step whose
// p99 stayed under 500 ms and whose sends kept up with the plan.
import { env, errorThresholds, loadDevices, makeClients, perRateThresholds, runDevices, trendStats } from './lib.js';

const devices = loadDevices();
const clients = makeClients();
const steps = (__ENV.STEPS || '100,200,400').split(',').map(Number);
const stepMs = Number(__ENV.STEP_S || 5) * 1000;

export const options = {
  scenarios: {
    devices: {
      executor: 'per-vu-iterations',
      vus: env.vus,
      iterations: 1,
      maxDuration: `${Number(__ENV.START_DELAY_S || 10) + (steps.length * stepMs) / 1000 + 120}s`,
    },
  },
  thresholds: { ...perRateThresholds(steps.map(String), 500, true), ...errorThresholds() },
  summaryTrendStats: trendStats,
};

export default function () {
  runDevices(clients, devices, {
    sendPlan: (elapsed) => {
      const step = steps[Math.min(steps.length - 1, Math.floor(elapsed / stepMs))];
      return { rate: step, tag: String(step) };
    },
    sendForMs: steps.length * stepMs,
    startDelayMs: Number(__ENV.START_DELAY_S || 10) * 1000,
    holdMs: Number(__ENV.HOLD_S || 2) * 1000,
    ackEveryMs: Number(__ENV.ACK_MS || 5000),
    ackBatch: 500,
    connectTimeoutMs: Number(__ENV.CONNECT_TIMEOUT_S || 120) * 1000,
  });
}
