// Compiled with `tsc --strict --noEmit` beside the types openapi-typescript generated from the
// served document (tests/e2e/test_generated_clients.py): what an integrator's code would use.
import type { components, operations, paths } from "./satchel";

type Schemas = components["schemas"];
type Created = paths["/downloads"]["post"]["responses"][202]["content"]["application/json"];
type Page = operations["listDownloads"]["responses"][200]["content"]["application/json"];
type Refusal = components["responses"]["QuotaExceeded"]["content"]["application/problem+json"];

export function describe(download: Schemas["Download"]): string {
  // The discriminator narrows: only a zip download has `keys` in its params.
  if (download.type === "zip") {
    const keys: string[] | undefined = download.params.keys;
    return `${download.id} ${download.state} ${keys?.length ?? 0} keys`;
  }
  return `${download.id} ${download.state}`;
}

export function linkOf(created: Created): string | undefined {
  return created.link?.url;
}

export function ids(page: Page): string[] {
  return page.items.map((item) => item.id);
}

export function explain(problem: Refusal): string {
  // QuotaExceeded names whose limit and how many; API Gateway's Throttled neither.
  const scope: "user" | "tenant" | undefined = problem.scope;
  const which = scope === undefined ? "request rate" : `${scope} limit ${problem.limit}`;
  return `${problem.status} ${problem.Code} (${problem.type}): ${problem.detail}, ${which}`;
}

export const request: Schemas["DownloadRequest"] = {
  type: "zip",
  params: { keys: ["acme/reports/2024/q1.csv"], format: "tar.gz" },
  link: { max_uses: 2 },
};

export const states: Schemas["DownloadState"][] = ["PENDING", "RUNNING", "DONE"];
