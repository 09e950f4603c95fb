// swift-tools-version: 6.2
import PackageDescription

/// One settings array for every Swift target: Swift 6 mode, warnings are errors.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .treatAllWarnings(as: .error),
]

let package = Package(
    name: "strata",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "StrataJournal", targets: ["StrataJournal"]),
        .library(name: "StrataWire", targets: ["StrataWire"]),
        .library(name: "StrataClient", targets: ["StrataClient"]),
        .library(name: "StrataNode", targets: ["StrataNode"]),
        .executable(name: "journal-node", targets: ["JournalNodeMain"]),
        .executable(name: "strata", targets: ["StrataCLI"]),
        .executable(name: "journal-fuzz", targets: ["JournalFuzz"]),
        .executable(name: "mqtt-gateway", targets: ["MQTTGatewayMain"]),
        .executable(name: "kafka-gateway", targets: ["KafkaGatewayMain"]),
        .executable(name: "amqp-gateway", targets: ["AMQPGatewayMain"]),
        .executable(name: "storage-bench", targets: ["StorageBench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
    ],
    targets: [
        // C libraries from Debian's -dev packages.
        .systemLibrary(
            name: "CRocksDB", path: "Sources/CRocksDB", pkgConfig: "rocksdb",
            providers: [.apt(["librocksdb-dev"])]),
        .systemLibrary(
            name: "CURing", path: "Sources/CURing", pkgConfig: "liburing",
            providers: [.apt(["liburing-dev"])]),
        .systemLibrary(
            name: "CZstd", path: "Sources/CZstd", pkgConfig: "libzstd",
            providers: [.apt(["libzstd-dev"])]),
        .systemLibrary(
            name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(
            name: "CLZ4", path: "Sources/CLZ4", pkgConfig: "liblz4", providers: [.apt(["liblz4-dev"])]),
        .systemLibrary(
            name: "CSnappy", path: "Sources/CSnappy", pkgConfig: "snappy", providers: [.apt(["libsnappy-dev"])]),
        .systemLibrary(
            name: "CCurl", path: "Sources/CCurl", pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]),
        // Tiny C shims for what Swift cannot express: CRC-32C with the SSE4.2 instruction.
        .target(name: "CStrataShims", path: "Sources/CStrataShims"),

        // Password hashing and SASL shared by the gateways' authentication.
        .target(
            name: "StrataAuth",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"), .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings),

        // Object stores for the object tier: S3 (SigV4) over libcurl.
        .target(
            name: "StrataObjects",
            dependencies: [
                "CCurl", "CZstd", "StrataJournal",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings),

        // The journal engine.
        .target(
            name: "StrataJournal",
            dependencies: [
                "CRocksDB", "CURing", "CStrataShims", "CZstd", "CZlib", "CLZ4", "CSnappy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: swiftSettings),

        // The journal protocol: frames, codec, typed requests and answers.
        .target(
            name: "StrataWire",
            dependencies: [
                "StrataJournal", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        // JournalClient: one API, remote (the protocol) and in-process (the engine).
        .target(
            name: "StrataClient",
            dependencies: [
                "StrataJournal", "StrataWire", "StrataAuth",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        // journal-node as a library: protocol server, HTTP, metrics, config, service group.
        .target(
            name: "StrataNode",
            dependencies: [
                "StrataJournal", "StrataWire", "StrataClient", "StrataMQTT", "StrataKafka", "StrataAMQP",
                "StrataObjects",
                "StrataAuth", "StrataKit", "StrataTopics",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings),

        .executableTarget(
            name: "JournalNodeMain",
            dependencies: [
                "StrataNode", "StrataJournal", "StrataWire", "StrataMQTT",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            path: "Sources/journal-node",
            swiftSettings: swiftSettings),

        .executableTarget(
            name: "StrataCLI",
            dependencies: [
                "StrataClient", "StrataJournal", "StrataWire", "StrataAuth", "StrataObjects", "StrataTopics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Sources/strata",
            swiftSettings: swiftSettings),

        // The gateway kit: what every gateway process and journal-node share that is no protocol
        // of their own (an HTTP endpoint for metrics, health and admin JSON; gateway metrics).
        .target(
            name: "StrataKit",
            dependencies: [
                "StrataJournal", "StrataWire", "StrataClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings),

        // The topic registry, the name mapping between protocols and the record envelope, which
        // every gateway shares (docs/topics.md).
        .target(
            name: "StrataTopics",
            dependencies: [
                "StrataJournal", "StrataClient", "StrataWire", .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        // AMQP 0-9-1 with RabbitMQ's extensions: frames, methods, tables, the connection's rules
        // (gateways/amqp).
        .target(
            name: "StrataAMQP",
            dependencies: [
                "StrataJournal", "StrataTopics", "StrataClient", "StrataKit", "StrataAuth", "StrataWire",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "gateways/amqp/Sources/StrataAMQP",
            swiftSettings: swiftSettings),

        .executableTarget(
            name: "AMQPGatewayMain",
            dependencies: [
                "StrataAMQP", "StrataClient", "StrataWire", "StrataKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "gateways/amqp/Sources/amqp-gateway",
            swiftSettings: swiftSettings),

        // MQTT 3.1.1 / 5.0: packet codec, topics (gateways/mqtt).
        .target(
            name: "StrataMQTT",
            dependencies: [
                "StrataJournal", "StrataClient", "StrataAuth", "StrataWire", "StrataTopics", "StrataKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            path: "gateways/mqtt/Sources/StrataMQTT",
            swiftSettings: swiftSettings),

        .executableTarget(
            name: "MQTTGatewayMain",
            dependencies: [
                "StrataMQTT", "StrataClient", "StrataWire", "StrataJournal", "StrataKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "gateways/mqtt/Sources/mqtt-gateway",
            swiftSettings: swiftSettings),

        // The Kafka wire protocol on the journal (gateways/kafka).
        .target(
            name: "StrataKafka",
            dependencies: [
                "StrataJournal", "StrataClient", "StrataWire", "StrataAuth", "StrataTopics", "StrataKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            path: "gateways/kafka/Sources/StrataKafka",
            swiftSettings: swiftSettings),

        .executableTarget(
            name: "KafkaGatewayMain",
            dependencies: [
                "StrataKafka", "StrataClient", "StrataWire", "StrataKit",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "gateways/kafka/Sources/kafka-gateway",
            swiftSettings: swiftSettings),

        // libFuzzer harness (`make fuzz`); a normal build is a replay tool for saved inputs.
        .executableTarget(
            name: "JournalFuzz",
            dependencies: [
                "StrataJournal", "StrataWire", "StrataMQTT", "StrataKafka", "StrataAMQP", "CStrataShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Fuzz/JournalFuzz",
            swiftSettings: swiftSettings),

        .executableTarget(
            name: "StorageBench",
            dependencies: [
                "StrataJournal", "StrataClient", "StrataWire", "StrataMQTT", "StrataAMQP", "StrataObjects", "CZstd",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "storage-bench/Sources",
            swiftSettings: swiftSettings),

        .target(
            name: "StrataTestSupport",
            dependencies: [
                "StrataJournal",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/StrataTestSupport",
            swiftSettings: swiftSettings),

        .testTarget(
            name: "StrataObjectsTests",
            dependencies: [
                "StrataObjects", "StrataTestSupport", "StrataJournal", .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),

        .testTarget(
            name: "StrataKafkaTests",
            dependencies: [
                "StrataKafka", "StrataJournal", "StrataClient", "StrataTestSupport", "StrataAuth",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        .testTarget(
            name: "StrataTopicsTests",
            dependencies: ["StrataTopics", "StrataJournal", "StrataClient", "StrataTestSupport", "StrataWire"],
            swiftSettings: swiftSettings),

        .testTarget(
            name: "StrataAMQPTests",
            dependencies: [
                "StrataAMQP", "StrataTestSupport", "StrataJournal", "StrataTopics", "StrataClient",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),

        .testTarget(
            name: "StrataMQTTTests",
            dependencies: [
                "StrataMQTT", "StrataTopics", "StrataTestSupport", "StrataClient", "StrataJournal",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings),

        .testTarget(
            name: "StrataNodeTests",
            dependencies: [
                "StrataJournal", "StrataWire", "StrataClient", "StrataNode", "StrataTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        .testTarget(
            name: "StrataJournalTests",
            dependencies: [
                "StrataJournal", "StrataTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
    ]
)
