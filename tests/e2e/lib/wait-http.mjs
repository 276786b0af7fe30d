// Waits until every URL given answers (any HTTP status), at most 30 s.

const deadline = Date.now() + 30_000;
for (const url of process.argv.slice(2)) {
  for (;;) {
    try {
      await fetch(url, { signal: AbortSignal.timeout(2000) });
      break;
    } catch (err) {
      if (Date.now() > deadline) {
        console.error(`[e2e] ${url} did not answer: ${err.message}`);
        process.exit(1);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
