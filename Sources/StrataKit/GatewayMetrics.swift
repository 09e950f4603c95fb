import Logging
import Metrics
import NIOCore
import Prometheus
import StrataJournal
import StrataWire

/// The metrics of a gateway running as its own process: swift-metrics bootstrapped with a
/// Prometheus registry, served at `/metrics` (and `/health`, which answers 200 while the
/// process serves) by an `HTTPEndpoint` on `--metrics-listen`.
public enum GatewayMetrics {
    /// For a gateway command's `--metrics-listen HOST:PORT` (nil: no endpoint): the endpoint,
    /// announced as `metrics HOST:PORT` once bound. Call it before the gateway's metrics are used.
    public static func endpoint(listen: String?, logger: Logger) throws -> HTTPEndpoint? {
        guard let listen else { return nil }
        guard let address = try? HostPort(parsing: listen) else {
            throw JournalError(.invalidArgument, "--metrics-listen must be HOST:PORT, not \(listen)")
        }
        return endpoint(
            host: address.host, port: address.port, logger: logger, onBound: { StrataProcess.announce("metrics", $0) })
    }

    /// Bootstraps the metrics system (once per process) and returns the endpoint serving it.
    public static func endpoint(
        host: String, port: Int, logger: Logger, onBound: @escaping @Sendable (SocketAddress) -> Void
    ) -> HTTPEndpoint {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return HTTPEndpoint(host: host, port: port, name: "metrics", logger: logger, onBound: onBound) {
            method, uri, _ in
            guard method == .GET || method == .HEAD else { return .error(.methodNotAllowed, "only GET is served") }
            switch uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri {
            case "/metrics":
                return EndpointResponse(
                    status: .ok, contentType: "text/plain; version=0.0.4", body: registry.emitToBuffer())
            case "/health":
                return .json(["status": "ok"])
            default:
                return .error(.notFound, "no route for \(uri): /metrics and /health are served")
            }
        }
    }
}
