// steady: every device connected, groups of 5 users x 2 devices, a fixed total send rate (see fixedRateScenario).
import { fixedRateScenario } from './lib.js';

const scenario = fixedRateScenario(100);
export const options = scenario.options;
export default scenario.run;
