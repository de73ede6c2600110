// drain: the runner stored K events in each device's inbox while it was offline; here every device reconnects at
// once. time_to_inbox_drained is per device, from opening its stream to its InboxDrained; backlog_events counts what
// came before it. The runner divides the events by the slowest device's time. Devices ack as they go (ACK_BATCH).
import { connectTimeoutS, loadDevices, makeClients, runDevices, scenarioOptions } from './lib.js';

const devices = loadDevices();
const clients = makeClients();

export const options = scenarioOptions(connectTimeoutS + 60, {
  time_to_inbox_drained: ['max>=0'],
  backlog_events: ['count>=0'],
});

export default function () {
  runDevices(clients, devices, {
    sendPlan: null,
    sendForMs: 0,
    holdMs: Number(__ENV.HOLD_S || 1) * 1000,
    ackEveryMs: 0,
    ackBatch: Number(__ENV.ACK_BATCH || 0),
  });
}
