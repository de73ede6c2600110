// steady: every device connected, groups of 5 users x 2 devices, a fixed total send rate (RATE sends/s) for SEND_S
// seconds. Thresholds: p99 delivery_latency < 500 ms and fewer than 0.1 % failed sends.
import { env, errorThresholds, loadDevices, makeClients, runDevices, trendStats } from './lib.js';

const devices = loadDevices();
const clients = makeClients();
const rate = Number(__ENV.RATE || 100);
const tag = String(rate);
const warmupMs = Number(__ENV.WARMUP_S || 0) * 1000;

export const options = {
  scenarios: {
    devices: {
      executor: 'per-vu-iterations',
      vus: env.vus,
      iterations: 1,
      maxDuration: `${Number(__ENV.START_DELAY_S || 10) + Number(__ENV.SEND_S || 20) + 120}s`,
    },
  },
  thresholds: {
    ...errorThresholds(),
    send_error_rate: ['rate<0.001'],
    [`delivery_latency{rate:${tag}}`]: ['p(99)<500'],
    [`sends{rate:${tag}}`]: ['count>=0'],
    [`deliveries{rate:${tag}}`]: ['count>=0'],
  },
  summaryTrendStats: trendStats,
};

export default function () {
  runDevices(clients, devices, {
    // The first WARMUP_S seconds of sending are tagged "warmup" (JIT, pools, caches) and left out of the figures.
    sendPlan: (elapsed) => ({ rate, tag: elapsed < warmupMs ? 'warmup' : tag }),
    sendForMs: Number(__ENV.SEND_S || 20) * 1000,
    startDelayMs: Number(__ENV.START_DELAY_S || 10) * 1000,
    holdMs: Number(__ENV.HOLD_S || 2) * 1000,
    ackEveryMs: Number(__ENV.ACK_MS || 5000),
    ackBatch: 500,
    connectTimeoutMs: Number(__ENV.CONNECT_TIMEOUT_S || 120) * 1000,
  });
}
