// Shared k6 code for Palaver's benchmarks: device streams on palaver.chat.v1.ChatService/Connect, open-loop sends as
// frames on those streams, acks, and the metrics every scenario reports. bench/run.ts prepares the server, the chats
// and a devices file, then runs one of the scenario scripts beside this file with k6; see bench/README.md.
//
// Environment (-e, set by bench/run.ts):
//   DEVICES   path of the devices JSON: { devices: [{ t: token, c: chat id, s: 1 if it sends }] }
//   ADDRS     comma-separated host:port of the server nodes
//   VUS       VUs that share the devices (device i belongs to VU i % VUS + 1)
//   CONNS     gRPC connections (HTTP/2 sessions) per VU; a VU's streams are spread over them
//   CONNECT_TIMEOUT_S  how long a VU waits for its devices to drain before it sends anyway (default 120)

import grpc from 'k6/net/grpc';
import exec from 'k6/execution';
import { SharedArray } from 'k6/data';
import { Counter, Rate, Trend } from 'k6/metrics';
import { clearInterval, setInterval, setTimeout } from 'k6/timers';

export const CONNECT = 'palaver.chat.v1.ChatService/Connect';

export const env = {
  devicesFile: __ENV.DEVICES,
  addrs: (__ENV.ADDRS || '127.0.0.1:8080').split(','),
  vus: Number(__ENV.VUS || 1),
  conns: Number(__ENV.CONNS || 1),
};

// Our own metrics. Latencies are milliseconds measured on this machine's clock by the same k6 process that sent.
export const metrics = {
  // From the send timestamp carried in the message text to the event's arrival on a recipient device's stream.
  deliveryLatency: new Trend('delivery_latency', true),
  // From writing a sendMessage frame to its CommandResult (the message is stored when it comes back).
  sendLatency: new Trend('send_latency', true),
  sends: new Counter('sends'),
  deliveries: new Counter('deliveries'),
  // Failed commands and stream errors, tagged with the gRPC code (or "stream_<code>" for a stream's end).
  errors: new Counter('errors'),
  // Per command result: true when it failed (thresholds take its rate).
  sendErrors: new Rate('send_error_rate'),
  acks: new Counter('acked_events'),
  // Drain: events received before InboxDrained, and how long after its stream opened each device got InboxDrained.
  backlogEvents: new Counter('backlog_events'),
  drainTime: new Trend('time_to_inbox_drained', true),
  connected: new Counter('streams_drained'),
};

/** The devices file, parsed once and shared read-only by all VUs. */
export function loadDevices() {
  return new SharedArray('devices', () => JSON.parse(open(env.devicesFile)).devices);
}

/** One gRPC client per connection this VU will open (clients can only be made in the init context). */
export function makeClients() {
  const clients = [];
  for (let i = 0; i < env.conns; i++) clients.push(new grpc.Client());
  return clients;
}

/** The devices of this VU: every VUS-th one, so a group's devices sit on different VUs and connections. */
export function myDevices(devices) {
  const mine = [];
  const vu = exec.vu.idInTest - 1;
  for (let i = vu; i < devices.length; i += env.vus) mine.push({ index: i, ...devices[i] });
  return mine;
}

/** Text of a benchmark message: the send time and the rate tag, then padding to a typical chat message size. */
const PADDING = ' lorem ipsum dolor sit amet, consectetur adipiscing elit sed do eiusmod tempor';
function messageText(rateTag) {
  return `${Date.now()}|${rateTag}|${PADDING}`;
}

function parseText(text) {
  const a = text.indexOf('|');
  const b = text.indexOf('|', a + 1);
  return { sentAt: Number(text.slice(0, a)), rateTag: text.slice(a + 1, b) };
}

/**
 * Runs this VU's devices for one iteration and resolves when every stream has ended.
 *
 * options:
 *   sendPlan(elapsedMs) -> { rate, tag } | null   the total send rate at that moment (null: pause); each VU sends its
 *                      share, in proportion to its sending devices
 *   sendForMs          how long the plan runs (from when all of this VU's devices are drained)
 *   holdMs             how long streams stay open after sending stops (late deliveries, idle hold)
 *   ackEveryMs         each device acks what it received this often (0: never)
 *   ackBatch           ...or as soon as it has this many unacked events
 *   stopAboveP99Ms     stop sending once the p99 send latency this VU sees for any rate tag passes this (ramp)
 *   startDelayMs       wait this long before sending (all VUs connect first)
 * Sending waits until every device of the VU drained, or connectTimeoutS passed.
 */
export function runDevices(clients, devices, options) {
  const connected = new Set();
  const mine = myDevices(devices);
  const senders = mine.filter((d) => d.s);
  // This VU's share of the total rate is its share of the sending devices.
  let allSenders = Number(__ENV.SENDERS || 0);
  if (!allSenders) for (let i = 0; i < devices.length; i++) if (devices[i].s) allSenders++;
  const share = allSenders > 0 ? senders.length / allSenders : 0;
  const pending = new Map(); // requestId -> sent at
  let nextRequest = 0;
  let open = 0;
  let drained = 0;
  let stopping = false;
  const t0 = Date.now();

  for (let i = 0; i < clients.length; i++) {
    const addr = env.addrs[(exec.vu.idInTest - 1 + i) % env.addrs.length];
    clients[i].connect(addr, { plaintext: true, reflect: true, timeout: '60s' });
    connected.add(i);
  }

  const ack = (device) => {
    if (device.unacked.length === 0 || device.ended) return;
    const eventIds = device.unacked.splice(0, 1000);
    device.stream.write({ requestId: `a${nextRequest++}`, ackEvents: { eventIds } });
    metrics.acks.add(eventIds.length);
  };

  // Counters are summed here and added to k6 once a second (a k6 sample per event costs k6 more than the event).
  const deliveredByTag = new Map();
  const tagsOf = new Map();
  const tagsFor = (rateTag) => {
    let tags = tagsOf.get(rateTag);
    if (!tags) tagsOf.set(rateTag, (tags = { rate: rateTag }));
    return tags;
  };
  const flushCounts = () => {
    for (const [rateTag, n] of deliveredByTag) if (n > 0) metrics.deliveries.add(n, tagsFor(rateTag));
    deliveredByTag.clear();
  };
  const flushTimer = setInterval(flushCounts, 1000);

  // This VU's send latencies (sendMessage to its stored result) per rate tag, for stopAboveP99Ms. Not delivery
  // latencies: a VU may receive none of what it sends, and a stored result is what delivery waits for.
  const latencies = new Map();
  const latenciesOf = (rateTag) => {
    let list = latencies.get(rateTag);
    if (!list) latencies.set(rateTag, (list = []));
    return list;
  };
  // Any rate tag's p99 so far (late results of earlier steps keep arriving during later ones).
  const p99Above = (limit) => {
    for (const list of latencies.values()) {
      if (list.length < 20) continue;
      const sorted = list.slice().sort((a, b) => a - b);
      if (sorted[Math.floor(sorted.length * 0.99)] > limit) return true;
    }
    return false;
  };

  const onData = (device) => (message) => {
    const event = message.event;
    if (event) {
      if (event.newMessage) {
        if (device.drained) {
          const { sentAt, rateTag } = parseText(event.newMessage.text);
          metrics.deliveryLatency.add(Date.now() - sentAt, tagsFor(rateTag));
          deliveredByTag.set(rateTag, (deliveredByTag.get(rateTag) || 0) + 1);
        } else {
          device.backlog++;
        }
        device.unacked.push(event.eventId);
        if (options.ackBatch && device.unacked.length >= options.ackBatch) ack(device);
      } else if (event.inboxDrained) {
        device.drained = true;
        drained++;
        if (device.backlog > 0) metrics.backlogEvents.add(device.backlog);
        metrics.drainTime.add(Date.now() - device.openedAt);
        metrics.connected.add(1);
      } else if (event.chatUpdate) {
        device.unacked.push(event.eventId);
      }
      return;
    }
    const result = message.result;
    if (!result || result.requestId[0] !== 's') return;
    const sentAt = pending.get(result.requestId);
    pending.delete(result.requestId);
    const tags = { rate: result.requestId.slice(result.requestId.indexOf('|') + 1) };
    if (sentAt !== undefined) {
      metrics.sendLatency.add(Date.now() - sentAt, tags);
      if (options.stopAboveP99Ms) latenciesOf(tags.rate).push(Date.now() - sentAt);
    }
    if (result.error) {
      if (__ENV.DEBUG_ERRORS) console.warn(`send failed: ${JSON.stringify(result.error)}`);
      metrics.errors.add(1, { code: String(result.error.code) });
      metrics.sendErrors.add(true, tags);
    } else {
      metrics.sends.add(1, tags);
      metrics.sendErrors.add(false, tags);
    }
  };

  for (let i = 0; i < mine.length; i++) {
    const device = mine[i];
    device.unacked = [];
    device.backlog = 0;
    device.drained = false;
    device.ended = false;
    device.openedAt = Date.now();
    device.stream = new grpc.Stream(clients[i % clients.length], CONNECT, {
      metadata: { authorization: `Bearer ${device.t}` },
    });
    open++;
    device.stream.on('data', onData(device));
    device.stream.on('error', (error) => {
      if (!stopping) metrics.errors.add(1, { code: `stream_${error && error.code}` });
    });
    device.stream.on('end', () => {
      device.ended = true;
      open--;
    });
  }

  // Acks are spread over the interval (a slice of the devices every 100 ms) rather than all at once.
  let ackCursor = 0;
  const ackSlice = options.ackEveryMs > 0 ? Math.max(1, Math.ceil((mine.length * 100) / options.ackEveryMs)) : 0;
  const ackTimer =
    ackSlice > 0
      ? setInterval(() => {
          for (let n = 0; n < ackSlice && mine.length > 0; n++) ack(mine[ackCursor++ % mine.length]);
        }, 100)
      : null;

  // Sending starts once this VU's devices have all drained (and after startDelayMs), then follows the plan
  // open-loop: every tick sends what is due by the clock, however slow the answers are.
  // The plan's clock starts startDelayMs after the scenario started, the same moment for every VU.
  const planStart = exec.scenario.startTime + (options.startDelayMs || 0);
  const startSending = () => {
    // A VU without sending devices still listens until the plan is over.
    if (!options.sendPlan || senders.length === 0 || options.sendForMs <= 0) {
      return stopAfter(Math.max(0, planStart + Math.max(0, options.sendForMs) - Date.now()) + options.holdMs);
    }
    const start = planStart;
    let due = 0;
    let sent = 0;
    let lastTick = Math.max(start, Date.now());
    let next = 0;
    let lastCheck = 0;
    const timer = setInterval(() => {
      const now = Date.now();
      const elapsed = now - start;
      if (elapsed >= options.sendForMs) {
        clearInterval(timer);
        return stopAfter(options.holdMs);
      }
      const plan = options.sendPlan(elapsed);
      if (!plan) return;
      if (options.stopAboveP99Ms && now - lastCheck >= 500) {
        lastCheck = now;
        if (p99Above(options.stopAboveP99Ms)) {
          clearInterval(timer);
          return stopAfter(options.holdMs);
        }
      }
      due += ((now - lastTick) * plan.rate * share) / 1000;
      lastTick = now;
      while (sent < Math.floor(due)) {
        const device = senders[next++ % senders.length];
        sent++;
        if (device.ended) continue;
        const requestId = `s${nextRequest++}|${plan.tag}`;
        pending.set(requestId, Date.now());
        device.stream.write({
          requestId,
          sendMessage: { chatId: device.c, clientMessageId: requestId, text: messageText(plan.tag) },
        });
      }
    }, 5);
  };

  const stopAfter = (ms) => {
    setTimeout(() => {
      stopping = true;
      if (ackTimer) clearInterval(ackTimer);
      clearInterval(flushTimer);
      flushCounts();
      for (const device of mine) ack(device);
      for (const device of mine) if (!device.ended) device.stream.end();
      // The server ends each stream once it has answered the frames written before the half-close.
    }, ms);
  };

  const waitDrained = setInterval(() => {
    const waited = Date.now() - t0;
    if (drained >= mine.length || waited > connectTimeoutS * 1000) {
      clearInterval(waitDrained);
      if (drained < mine.length) metrics.errors.add(mine.length - drained, { code: 'not_drained' });
      setTimeout(startSending, Math.max(0, planStart - Date.now()));
    }
  }, 20);
}

/** Per-step thresholds so k6 exports a submetric for each rate tag (the runner reads them for the chart). */
export function perRateThresholds(tags, p99Limit) {
  const thresholds = {};
  for (const tag of tags) {
    thresholds[`delivery_latency{rate:${tag}}`] = [`p(99)<${p99Limit}`];
    thresholds[`sends{rate:${tag}}`] = ['count>=0'];
    thresholds[`deliveries{rate:${tag}}`] = ['count>=0'];
    thresholds[`send_latency{rate:${tag}}`] = ['p(99)>=0'];
  }
  return thresholds;
}

/** Thresholds that only make k6 export the error count of each likely code (errors{code:...}). */
function errorThresholds() {
  const codes = ['3', '5', '7', '8', '13', '14', 'stream_1', 'stream_8', 'stream_10', 'stream_14', 'not_drained'];
  const thresholds = {};
  for (const code of codes) thresholds[`errors{code:${code}}`] = ['count>=0'];
  return thresholds;
}

const trendStats = ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'];

/** Seconds to wait for every device of a VU to drain before sending starts (or the run is given up). */
export const connectTimeoutS = Number(__ENV.CONNECT_TIMEOUT_S || 120);

/** k6 options of every scenario: one long iteration per VU, the error counts by code, plus the given thresholds. */
export function scenarioOptions(maxDurationS, thresholds) {
  return {
    scenarios: {
      devices: { executor: 'per-vu-iterations', vus: env.vus, iterations: 1, maxDuration: `${maxDurationS}s` },
    },
    thresholds: { ...errorThresholds(), ...thresholds },
    summaryTrendStats: trendStats,
  };
}

/**
 * A fixed total send rate (RATE sends/s) for SEND_S seconds, after START_DELAY_S; the first WARMUP_S seconds of
 * sending are tagged "warmup" (JIT, pools, caches) and left out of the figures. Thresholds: p99 delivery_latency
 * < 500 ms and fewer than 0.1 % failed sends. Returns the script's options and its default function.
 */
export function fixedRateScenario(defaultRate) {
  const devices = loadDevices();
  const clients = makeClients();
  const rate = Number(__ENV.RATE || defaultRate);
  const tag = String(rate);
  const warmupMs = Number(__ENV.WARMUP_S || 0) * 1000;
  const startDelayS = Number(__ENV.START_DELAY_S || 10);
  const sendS = Number(__ENV.SEND_S || 20);
  return {
    options: scenarioOptions(startDelayS + sendS + 120, {
      send_error_rate: ['rate<0.001'],
      [`delivery_latency{rate:${tag}}`]: ['p(99)<500'],
      [`sends{rate:${tag}}`]: ['count>=0'],
      [`deliveries{rate:${tag}}`]: ['count>=0'],
    }),
    run() {
      runDevices(clients, devices, {
        sendPlan: (elapsed) => ({ rate, tag: elapsed < warmupMs ? 'warmup' : tag }),
        sendForMs: sendS * 1000,
        startDelayMs: startDelayS * 1000,
        holdMs: Number(__ENV.HOLD_S || 2) * 1000,
        ackEveryMs: Number(__ENV.ACK_MS || 5000),
        ackBatch: 500,
      });
    },
  };
}
