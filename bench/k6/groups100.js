// groups100: groups of 100 users (one device each), a fixed total send rate (see fixedRateScenario); every send fans
// out to the 99 other devices.
import { fixedRateScenario } from './lib.js';

const scenario = fixedRateScenario(10);
export const options = scenario.options;
export default scenario.run;
