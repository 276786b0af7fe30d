// Prints N free loopback TCP ports on one line (held open together so they
// differ, then released for the gateway to take).

import net from 'node:net';

const count = Number(process.argv[2] || 1);
const servers = await Promise.all(Array.from({ length: count }, () => new Promise((resolve, reject) => {
  const server = net.createServer();
  server.once('error', reject);
  server.listen(0, '127.0.0.1', () => resolve(server));
})));
process.stdout.write(`${servers.map((s) => s.address().port).join(' ')}\n`);
await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
