/**
 * The cluster page: nodes, shards with their leaders, and the lag of each
 * shard's event stream, from `GET /v1/admin/cluster`. An embedded server
 * (no Redis) says so.
 */
import { h, replaceChildren, announce } from "./dom.js";
import { describe } from "./user_pages.js";
/** Cluster mode: nodes and shards. */
export const clusterPage = (session, main) => {
    const feedback = h("p", { class: "notice", "aria-live": "polite" });
    const body = h("div", { id: "cluster" });
    const load = () => session.api.call("GET", "/v1/admin/cluster").then((view) => {
        if (view.mode === "embedded") {
            replaceChildren(body, h("p", { class: "card" }, "This server runs embedded: one process holds every role, there are no nodes or shards to show."));
            return;
        }
        replaceChildren(body, h("section", { class: "card", "aria-labelledby": "nodes-title" }, h("h2", { id: "nodes-title" }, `Nodes (${view.nodes.length})`), h("ul", { class: "plain", id: "node-list" }, ...view.nodes.map((n) => h("li", { "data-node": n.id }, h("strong", {}, n.id), n.id === view.node ? " (this node)" : "", ` — ${n.connections} socket${n.connections === 1 ? "" : "s"}`)))), h("section", { class: "card", "aria-labelledby": "shards-title" }, h("h2", { id: "shards-title" }, `Shards (${view.shards.length})`), h("p", { class: "muted" }, "Stream lag: entries the leader has not applied yet (its own figure for the shards this node leads; else the entries after the stored cursor, counted up to 1,000)."), h("div", { class: "table-wrap" }, h("table", { id: "shard-table" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Shard"), h("th", { scope: "col" }, "Leader"), h("th", { scope: "col" }, "Epoch"), h("th", { scope: "col" }, "Stream length"), h("th", { scope: "col" }, "Stream lag"))), h("tbody", {}, ...view.shards.map((s) => h("tr", { "data-shard": String(s.shard), "data-leader": s.leader ?? "" }, h("td", {}, String(s.shard)), h("td", {}, s.leader ?? "none"), h("td", {}, s.epoch === null ? "–" : String(s.epoch)), h("td", {}, String(s.stream_length)), h("td", {}, s.stream_lag === null ? "unknown" : String(s.stream_lag)))))))));
    }, (e) => announce(feedback, describe(e), "error"));
    replaceChildren(main, h("h1", { tabindex: -1 }, "Cluster"), feedback, body);
    void load();
    const timer = setInterval(() => void load(), 3000);
    return () => clearInterval(timer);
};
