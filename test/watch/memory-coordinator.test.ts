import { createMemoryCoordinator } from "../../src/watch/memory-coordinator.js";
import { describeCoordinatorContract } from "./coordinator-contract.js";

describeCoordinatorContract(
  "in-memory",
  async (options) => {
    const coordinator = createMemoryCoordinator(options);
    return { coordinator, cleanup: () => coordinator.close() };
  },
  { sharedByInstances: false },
);
