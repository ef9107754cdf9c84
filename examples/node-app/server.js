// A Node.js app with a dependency from npm, built by berth's Node provider.
const http = require("http");
const ms = require("ms");

const started = Date.now();
const port = parseInt(process.env.PORT || "8000", 10);
http
  .createServer((req, res) => {
    res.writeHead(200, { "Content-Type": "text/plain" });
    res.end(`node-app up for ${ms(Date.now() - started + 60000, { long: true })}\n`);
  })
  .listen(port, "0.0.0.0", () => console.log(`node-app listening on ${port}`));
