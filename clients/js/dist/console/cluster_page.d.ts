/**
 * The cluster page: nodes, shards with their leaders, and the lag of each
 * shard's event stream, from `GET /v1/admin/cluster`. An embedded server
 * (no Redis) says so.
 */
import { type Page } from "./user_pages.js";
/** `GET /v1/admin/cluster`. */
export interface ClusterView {
    mode: "embedded" | "cluster";
    node: string | null;
    nodes: Array<{
        id: string;
        connections: number;
        lease_deadline_ms: number;
    }>;
    shards: Array<{
        shard: number;
        leader: string | null;
        epoch: number | null;
        stream_length: number;
        stream_lag: number | null;
    }>;
}
/** Cluster mode: nodes and shards. */
export declare const clusterPage: Page;
