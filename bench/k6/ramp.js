// ramp: the total send rate climbs through STEPS (sends/s, comma-separated), STEP_S seconds each, until the p99
// latency passes 500 ms: each VU stops sending once the p99 of its sends' stored results does (delivery waits for
// those; k6's own abortOnFail is not used: aborting with gRPC streams open sometimes leaves k6 hung for good). Each message
// carries its step's rate, so late deliveries count against the step that sent them. The runner reports the knee: the
// highest step whose p99 stayed under 500 ms and whose sends kept up with the plan.
import { loadDevices, makeClients, perRateThresholds, runDevices, scenarioOptions } from './lib.js';

const devices = loadDevices();
const clients = makeClients();
const steps = (__ENV.STEPS || '100,200,400').split(',').map(Number);
const stepMs = Number(__ENV.STEP_S || 5) * 1000;
const startDelayS = Number(__ENV.START_DELAY_S || 10);

export const options = scenarioOptions(
  startDelayS + (steps.length * stepMs) / 1000 + 120,
  perRateThresholds(steps.map(String), 500),
);

export default function () {
  runDevices(clients, devices, {
    sendPlan: (elapsed) => {
      const step = steps[Math.min(steps.length - 1, Math.floor(elapsed / stepMs))];
      return { rate: step, tag: String(step) };
    },
    sendForMs: steps.length * stepMs,
    startDelayMs: startDelayS * 1000,
    holdMs: Number(__ENV.HOLD_S || 2) * 1000,
    ackEveryMs: Number(__ENV.ACK_MS || 5000),
    ackBatch: 500,
    stopAboveP99Ms: 500,
  });
}
