import { cloudflareTest } from "@cloudflare/vitest-pool-workers";
import { configDefaults, defineConfig } from "vitest/config";
import { EDGE_TEST_VARS } from "./test/edge/constants.js";

export default defineConfig({
  test: {
    testTimeout: 30_000,
    hookTimeout: 30_000,
    projects: [
      {
        extends: true,
        test: {
          name: "node",
          include: ["test/**/*.test.ts"],
          exclude: [...configDefaults.exclude, "test/edge/**"],
          // Integration suites start real servers and processes; on a shared 2-core
          // machine they run one file at a time so timing-sensitive checks stay stable.
          fileParallelism: false,
          sequence: { groupOrder: 1 },
        },
      },
      {
        extends: true,
        plugins: [
          // The Worker of wrangler.toml inside workerd, its TOP gateway being the double
          // that the global setup serves from Node over loopback HTTP.
          cloudflareTest(({ inject }) => ({
            wrangler: { configPath: "./wrangler.toml" },
            miniflare: {
              bindings: {
                ...EDGE_TEST_VARS,
                TOP_GATEWAY_URL: `${inject("gatewayUrl")}/router/rest`,
                WEBHOOK_URL: `${inject("gatewayUrl")}/webhooks`,
              },
            },
          })),
        ],
        test: {
          name: "workers",
          include: ["test/edge/**/*.test.ts"],
          globalSetup: ["test/edge/gateway-double.setup.ts"],
          fileParallelism: false,
          // After the Node project (group 1), so the two never compete for the two cores.
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
