// `node:net` and `node:tls` in the browser bundle: src/node imports them to name a connection's
// failure (ERR_CONNECTION_REFUSED, ERR_TLS…); the console connects over WebSocket and never calls them.
function unavailable(): never {
  throw new Error('console: raw sockets are not available in the browser');
}
export const isIP = (): number => 0;
export const connect = unavailable;
export default {};
