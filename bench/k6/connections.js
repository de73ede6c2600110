// connections: idle device streams held open for HOLD_S seconds after all of them drained. The runner reads the
// server's resident memory before and while they are open and reports it per connected device.
import { connectTimeoutS, loadDevices, makeClients, runDevices, scenarioOptions } from './lib.js';

const devices = loadDevices();
const clients = makeClients();
const holdS = Number(__ENV.HOLD_S || 10);

export const options = scenarioOptions(connectTimeoutS + holdS + 60, { time_to_inbox_drained: ['max>=0'] });

export default function () {
  runDevices(clients, devices, { sendPlan: null, sendForMs: 0, holdMs: holdS * 1000, ackEveryMs: 0 });
}
