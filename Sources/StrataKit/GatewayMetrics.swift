import Logging
import Metrics
import NIOCore
import Prometheus

/// The metrics of a gateway running as its own process: swift-metrics bootstrapped with a
/// Prometheus registry, served at `/metrics` (and `/health`, which answers 200 while the
/// process serves) by an `HTTPEndpoint` on `--metrics-listen`.
public enum GatewayMetrics {
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
