/**
 * The web console served by `presenced` at `/console`: sign in with a
 * pasted token, then the status menu, the watch list and, for admins, the
 * workspace pages. Routing is by hash (`#/status`, `#/admin/statuses` …)
 * so every page is one static document under a strict CSP.
 */
export {};
