// connections: idle device streams held open for HOLD_S seconds after all of them drained. The runner reads the
// server's resident memory before and while they are open and reports it per connected device.
import { env, errorThresholds, loadDevices, makeClients, runDevices, trendStats } from './lib.js';

const devices = loadDevices();
const clients = makeClients();

export const options = {
  scenarios: {
    devices: {
      executor: 'per-vu-iterations',
      vus: env.vus,
      iterations: 1,
      maxDuration: `${Number(__ENV.CONNECT_TIMEOUT_S || 120) + Number(__ENV.HOLD_S || 10) + 60}s`,
    },
  },
  thresholds: { ...errorThresholds(), time_to_inbox_drained: ['max>=0'] },
  summaryTrendStats: trendStats,
};

export default function () {
  runDevices(clients, devices, {
    sendPlan: null,
    sendForMs: 0,
    // Hold from the moment the whole test started, so every VU closes at the same time.
    holdMs: Number(__ENV.HOLD_S || 10) * 1000,
    ackEveryMs: 0,
    connectTimeoutMs: Number(__ENV.CONNECT_TIMEOUT_S || 120) * 1000,
  });
}
