import NIOCore

/// Every method of AMQP 0-9-1 with RabbitMQ's extensions (exchange.bind/unbind, basic.nack,
/// confirm, connection.blocked/unblocked and update-secret), both directions. Reserved
/// ("ticket", "out-of-band") arguments are read and dropped, and written as the spec's zero.
public enum AMQPMethod: Sendable, Hashable {
    public struct ConnectionStart: Sendable, Hashable {
        public var versionMajor: UInt8 = 0
        public var versionMinor: UInt8 = 9
        public var serverProperties: AMQPTable
        /// Space-separated SASL mechanism names.
        public var mechanisms: String
        public var locales: String = "en_US"

        public init(serverProperties: AMQPTable, mechanisms: String) {
            self.serverProperties = serverProperties
            self.mechanisms = mechanisms
        }
    }

    public struct ConnectionStartOk: Sendable, Hashable {
        public var clientProperties: AMQPTable
        public var mechanism: String
        public var response: [UInt8]
        public var locale: String

        public init(clientProperties: AMQPTable, mechanism: String, response: [UInt8], locale: String = "en_US") {
            self.clientProperties = clientProperties
            self.mechanism = mechanism
            self.response = response
            self.locale = locale
        }
    }

    public struct Tune: Sendable, Hashable {
        public var channelMax: UInt16
        public var frameMax: UInt32
        /// Seconds; 0: none.
        public var heartbeat: UInt16

        public init(channelMax: UInt16, frameMax: UInt32, heartbeat: UInt16) {
            self.channelMax = channelMax
            self.frameMax = frameMax
            self.heartbeat = heartbeat
        }
    }

    /// connection.close and channel.close.
    public struct Close: Sendable, Hashable {
        public var replyCode: UInt16
        public var replyText: String
        public var classID: UInt16
        public var methodID: UInt16

        public init(replyCode: UInt16, replyText: String, classID: UInt16 = 0, methodID: UInt16 = 0) {
            self.replyCode = replyCode
            self.replyText = replyText
            self.classID = classID
            self.methodID = methodID
        }

        public init(_ error: AMQPError) {
            self.init(replyCode: error.code, replyText: error.text, classID: error.classID, methodID: error.methodID)
        }
    }

    public struct ExchangeDeclare: Sendable, Hashable {
        public var exchange: String
        public var type: String
        public var passive = false
        public var durable = false
        public var autoDelete = false
        public var `internal` = false
        public var noWait = false
        public var arguments = AMQPTable()

        public init(exchange: String, type: String) {
            self.exchange = exchange
            self.type = type
        }
    }

    /// exchange.bind and exchange.unbind.
    public struct ExchangeBind: Sendable, Hashable {
        public var destination: String
        public var source: String
        public var routingKey: String
        public var noWait = false
        public var arguments = AMQPTable()

        public init(destination: String, source: String, routingKey: String) {
            self.destination = destination
            self.source = source
            self.routingKey = routingKey
        }
    }

    public struct QueueDeclare: Sendable, Hashable {
        /// Empty: the server names the queue.
        public var queue: String
        public var passive = false
        public var durable = false
        public var exclusive = false
        public var autoDelete = false
        public var noWait = false
        public var arguments = AMQPTable()

        public init(queue: String) { self.queue = queue }
    }

    /// queue.bind and queue.unbind (which has no no-wait).
    public struct QueueBind: Sendable, Hashable {
        public var queue: String
        public var exchange: String
        public var routingKey: String
        public var noWait = false
        public var arguments = AMQPTable()

        public init(queue: String, exchange: String, routingKey: String) {
            self.queue = queue
            self.exchange = exchange
            self.routingKey = routingKey
        }
    }

    public struct BasicConsume: Sendable, Hashable {
        public var queue: String
        /// Empty: the server names the consumer.
        public var consumerTag: String
        public var noLocal = false
        public var noAck = false
        public var exclusive = false
        public var noWait = false
        public var arguments = AMQPTable()

        public init(queue: String, consumerTag: String = "") {
            self.queue = queue
            self.consumerTag = consumerTag
        }
    }

    public struct BasicPublish: Sendable, Hashable {
        public var exchange: String
        public var routingKey: String
        public var mandatory = false
        public var immediate = false

        public init(exchange: String, routingKey: String) {
            self.exchange = exchange
            self.routingKey = routingKey
        }
    }

    public struct BasicReturn: Sendable, Hashable {
        public var replyCode: UInt16
        public var replyText: String
        public var exchange: String
        public var routingKey: String

        public init(replyCode: UInt16, replyText: String, exchange: String, routingKey: String) {
            self.replyCode = replyCode
            self.replyText = replyText
            self.exchange = exchange
            self.routingKey = routingKey
        }
    }

    public struct BasicDeliver: Sendable, Hashable {
        public var consumerTag: String
        public var deliveryTag: UInt64
        public var redelivered: Bool
        public var exchange: String
        public var routingKey: String

        public init(consumerTag: String, deliveryTag: UInt64, redelivered: Bool, exchange: String, routingKey: String) {
            self.consumerTag = consumerTag
            self.deliveryTag = deliveryTag
            self.redelivered = redelivered
            self.exchange = exchange
            self.routingKey = routingKey
        }
    }

    public struct BasicGetOk: Sendable, Hashable {
        public var deliveryTag: UInt64
        public var redelivered: Bool
        public var exchange: String
        public var routingKey: String
        public var messageCount: UInt32

        public init(deliveryTag: UInt64, redelivered: Bool, exchange: String, routingKey: String, messageCount: UInt32)
        {
            self.deliveryTag = deliveryTag
            self.redelivered = redelivered
            self.exchange = exchange
            self.routingKey = routingKey
            self.messageCount = messageCount
        }
    }

    case connectionStart(ConnectionStart)
    case connectionStartOk(ConnectionStartOk)
    case connectionSecure(challenge: [UInt8])
    case connectionSecureOk(response: [UInt8])
    case connectionTune(Tune)
    case connectionTuneOk(Tune)
    case connectionOpen(virtualHost: String)
    case connectionOpenOk
    case connectionClose(Close)
    case connectionCloseOk
    case connectionBlocked(reason: String)
    case connectionUnblocked
    case connectionUpdateSecret(newSecret: [UInt8], reason: String)
    case connectionUpdateSecretOk

    case channelOpen
    case channelOpenOk
    case channelFlow(active: Bool)
    case channelFlowOk(active: Bool)
    case channelClose(Close)
    case channelCloseOk

    case exchangeDeclare(ExchangeDeclare)
    case exchangeDeclareOk
    case exchangeDelete(exchange: String, ifUnused: Bool, noWait: Bool)
    case exchangeDeleteOk
    case exchangeBind(ExchangeBind)
    case exchangeBindOk
    case exchangeUnbind(ExchangeBind)
    case exchangeUnbindOk

    case queueDeclare(QueueDeclare)
    case queueDeclareOk(queue: String, messageCount: UInt32, consumerCount: UInt32)
    case queueBind(QueueBind)
    case queueBindOk
    case queuePurge(queue: String, noWait: Bool)
    case queuePurgeOk(messageCount: UInt32)
    case queueDelete(queue: String, ifUnused: Bool, ifEmpty: Bool, noWait: Bool)
    case queueDeleteOk(messageCount: UInt32)
    case queueUnbind(QueueBind)
    case queueUnbindOk

    case basicQos(prefetchSize: UInt32, prefetchCount: UInt16, global: Bool)
    case basicQosOk
    case basicConsume(BasicConsume)
    case basicConsumeOk(consumerTag: String)
    /// From the client, or from the server when a queue goes away (consumer_cancel_notify).
    case basicCancel(consumerTag: String, noWait: Bool)
    case basicCancelOk(consumerTag: String)
    case basicPublish(BasicPublish)
    case basicReturn(BasicReturn)
    case basicDeliver(BasicDeliver)
    case basicGet(queue: String, noAck: Bool)
    case basicGetOk(BasicGetOk)
    case basicGetEmpty
    /// From the client (consumer acknowledgement) or the server (publisher confirm).
    case basicAck(deliveryTag: UInt64, multiple: Bool)
    case basicReject(deliveryTag: UInt64, requeue: Bool)
    case basicRecoverAsync(requeue: Bool)
    case basicRecover(requeue: Bool)
    case basicRecoverOk
    case basicNack(deliveryTag: UInt64, multiple: Bool, requeue: Bool)

    case confirmSelect(noWait: Bool)
    case confirmSelectOk

    case txSelect
    case txSelectOk
    case txCommit
    case txCommitOk
    case txRollback
    case txRollbackOk

    public var ids: (classID: UInt16, methodID: UInt16) {
        switch self {
        case .connectionStart: (10, 10)
        case .connectionStartOk: (10, 11)
        case .connectionSecure: (10, 20)
        case .connectionSecureOk: (10, 21)
        case .connectionTune: (10, 30)
        case .connectionTuneOk: (10, 31)
        case .connectionOpen: (10, 40)
        case .connectionOpenOk: (10, 41)
        case .connectionClose: (10, 50)
        case .connectionCloseOk: (10, 51)
        case .connectionBlocked: (10, 60)
        case .connectionUnblocked: (10, 61)
        case .connectionUpdateSecret: (10, 70)
        case .connectionUpdateSecretOk: (10, 71)
        case .channelOpen: (20, 10)
        case .channelOpenOk: (20, 11)
        case .channelFlow: (20, 20)
        case .channelFlowOk: (20, 21)
        case .channelClose: (20, 40)
        case .channelCloseOk: (20, 41)
        case .exchangeDeclare: (40, 10)
        case .exchangeDeclareOk: (40, 11)
        case .exchangeDelete: (40, 20)
        case .exchangeDeleteOk: (40, 21)
        case .exchangeBind: (40, 30)
        case .exchangeBindOk: (40, 31)
        case .exchangeUnbind: (40, 40)
        case .exchangeUnbindOk: (40, 51)
        case .queueDeclare: (50, 10)
        case .queueDeclareOk: (50, 11)
        case .queueBind: (50, 20)
        case .queueBindOk: (50, 21)
        case .queuePurge: (50, 30)
        case .queuePurgeOk: (50, 31)
        case .queueDelete: (50, 40)
        case .queueDeleteOk: (50, 41)
        case .queueUnbind: (50, 50)
        case .queueUnbindOk: (50, 51)
        case .basicQos: (60, 10)
        case .basicQosOk: (60, 11)
        case .basicConsume: (60, 20)
        case .basicConsumeOk: (60, 21)
        case .basicCancel: (60, 30)
        case .basicCancelOk: (60, 31)
        case .basicPublish: (60, 40)
        case .basicReturn: (60, 50)
        case .basicDeliver: (60, 60)
        case .basicGet: (60, 70)
        case .basicGetOk: (60, 71)
        case .basicGetEmpty: (60, 72)
        case .basicAck: (60, 80)
        case .basicReject: (60, 90)
        case .basicRecoverAsync: (60, 100)
        case .basicRecover: (60, 110)
        case .basicRecoverOk: (60, 111)
        case .basicNack: (60, 120)
        case .confirmSelect: (85, 10)
        case .confirmSelectOk: (85, 11)
        case .txSelect: (90, 10)
        case .txSelectOk: (90, 11)
        case .txCommit: (90, 20)
        case .txCommitOk: (90, 21)
        case .txRollback: (90, 30)
        case .txRollbackOk: (90, 31)
        }
    }

    public var classID: UInt16 { ids.classID }
    public var methodID: UInt16 { ids.methodID }

    /// Methods followed by a content header and body frames.
    public var carriesContent: Bool {
        switch self {
        case .basicPublish, .basicReturn, .basicDeliver, .basicGetOk: true
        default: false
        }
    }

    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeInteger(classID)
        buffer.writeInteger(methodID)
        switch self {
        case .connectionStart(let m):
            buffer.writeInteger(m.versionMajor)
            buffer.writeInteger(m.versionMinor)
            buffer.writeAMQPTable(m.serverProperties)
            buffer.writeLongString(Array(m.mechanisms.utf8))
            buffer.writeLongString(Array(m.locales.utf8))
        case .connectionStartOk(let m):
            buffer.writeAMQPTable(m.clientProperties)
            buffer.writeShortString(m.mechanism)
            buffer.writeLongString(m.response)
            buffer.writeShortString(m.locale)
        case .connectionSecure(let bytes), .connectionSecureOk(let bytes):
            buffer.writeLongString(bytes)
        case .connectionTune(let t), .connectionTuneOk(let t):
            buffer.writeInteger(t.channelMax)
            buffer.writeInteger(t.frameMax)
            buffer.writeInteger(t.heartbeat)
        case .connectionOpen(let virtualHost):
            buffer.writeShortString(virtualHost)
            buffer.writeShortString("")
            buffer.writeBits(false)
        case .connectionOpenOk:
            buffer.writeShortString("")
        case .connectionClose(let c), .channelClose(let c):
            buffer.writeInteger(c.replyCode)
            buffer.writeShortString(c.replyText)
            buffer.writeInteger(c.classID)
            buffer.writeInteger(c.methodID)
        case .connectionBlocked(let reason):
            buffer.writeShortString(reason)
        case .connectionUpdateSecret(let secret, let reason):
            buffer.writeLongString(secret)
            buffer.writeShortString(reason)
        case .channelOpen:
            buffer.writeShortString("")
        case .channelOpenOk:
            buffer.writeLongString([])
        case .channelFlow(let active), .channelFlowOk(let active):
            buffer.writeBits(active)
        case .exchangeDeclare(let m):
            buffer.writeInteger(UInt16(0))
            buffer.writeShortString(m.exchange)
            buffer.writeShortString(m.type)
            buffer.writeBits(m.passive, m.durable, m.autoDelete, m.internal, m.noWait)
            buffer.writeAMQPTable(m.arguments)
        case .exchangeDelete(let exchange, let ifUnused, let noWait):
            buffer.writeInteger(UInt16(0))
            buffer.writeShortString(exchange)
            buffer.writeBits(ifUnused, noWait)
        case .exchangeBind(let m), .exchangeUnbind(let m):
            buffer.writeInteger(UInt16(0))
            buffer.writeShortString(m.destination)
            buffer.writeShortString(m.source)
            buffer.writeShortString(m.routingKey)
            buffer.writeBits(m.noWait)
            buffer.writeAMQPTable(m.arguments)
        case .queueDeclare(let m):
            buffer.writeInteger(UInt16(0))
            buffer.writeShortString(m.queue)
            buffer.writeBits(m.passive, m.durable, m.exclusive, m.autoDelete, m.noWait)
            buffer.writeAMQPTable(m.arguments)
        case .queueDeclareOk(let queue, let messageCount, let consumerCount):
            buffer.writeShortString(queue)
            buffer.writeInteger(messageCount)
            buffer.writeInteger(consumerCount)
        case .queueBind(let m):
            buffer.writeInteger(UInt16(0))
            buffer.writeShortString(m.queue)
            buffer.writeShortString(m.exchange)
            buffer.writeShortString(m.routingKey)
            buffer.writeBits(m.noWait)
            buffer.writeAMQPTable(m.arguments)
        case .queueUnbind(let m):
            buffer.writeInteger(UInt16(0))
            buffer.writeShortString(m.queue)
            buffer.writeShortString(m.exchange)
            buffer.writeShortString(m.routingKey)
            buffer.writeAMQPTable(m.arguments)
        case .queuePurge(let queue, let noWait):
            buffer.writeInteger(UInt16(0))
            buffer.writeShortString(queue)
            buffer.writeBits(noWait)
        case .queuePurgeOk(let count), .queueDeleteOk(let count):
            buffer.writeInteger(count)
        case .queueDelete(let queue, let ifUnused, let ifEmpty, let noWait):
            buffer.writeInteger(UInt16(0))
            buffer.writeShortString(queue)
            buffer.writeBits(ifUnused, ifEmpty, noWait)
        case .basicQos(let size, let count, let global):
            buffer.writeInteger(size)
            buffer.writeInteger(count)
            buffer.writeBits(global)
        case .basicConsume(let m):
            buffer.writeInteger(UInt16(0))
            buffer.writeShortString(m.queue)
            buffer.writeShortString(m.consumerTag)
            buffer.writeBits(m.noLocal, m.noAck, m.exclusive, m.noWait)
            buffer.writeAMQPTable(m.arguments)
        case .basicConsumeOk(let tag), .basicCancelOk(let tag):
            buffer.writeShortString(tag)
        case .basicCancel(let tag, let noWait):
            buffer.writeShortString(tag)
            buffer.writeBits(noWait)
        case .basicPublish(let m):
            buffer.writeInteger(UInt16(0))
            buffer.writeShortString(m.exchange)
            buffer.writeShortString(m.routingKey)
            buffer.writeBits(m.mandatory, m.immediate)
        case .basicReturn(let m):
            buffer.writeInteger(m.replyCode)
            buffer.writeShortString(m.replyText)
            buffer.writeShortString(m.exchange)
            buffer.writeShortString(m.routingKey)
        case .basicDeliver(let m):
            buffer.writeShortString(m.consumerTag)
            buffer.writeInteger(m.deliveryTag)
            buffer.writeBits(m.redelivered)
            buffer.writeShortString(m.exchange)
            buffer.writeShortString(m.routingKey)
        case .basicGet(let queue, let noAck):
            buffer.writeInteger(UInt16(0))
            buffer.writeShortString(queue)
            buffer.writeBits(noAck)
        case .basicGetOk(let m):
            buffer.writeInteger(m.deliveryTag)
            buffer.writeBits(m.redelivered)
            buffer.writeShortString(m.exchange)
            buffer.writeShortString(m.routingKey)
            buffer.writeInteger(m.messageCount)
        case .basicGetEmpty:
            buffer.writeShortString("")
        case .basicAck(let tag, let multiple):
            buffer.writeInteger(tag)
            buffer.writeBits(multiple)
        case .basicReject(let tag, let requeue):
            buffer.writeInteger(tag)
            buffer.writeBits(requeue)
        case .basicRecoverAsync(let requeue), .basicRecover(let requeue):
            buffer.writeBits(requeue)
        case .basicNack(let tag, let multiple, let requeue):
            buffer.writeInteger(tag)
            buffer.writeBits(multiple, requeue)
        case .confirmSelect(let noWait):
            buffer.writeBits(noWait)
        case .connectionCloseOk, .connectionUnblocked, .connectionUpdateSecretOk, .channelCloseOk,
            .exchangeDeclareOk, .exchangeDeleteOk, .exchangeBindOk, .exchangeUnbindOk, .queueBindOk, .queueUnbindOk,
            .basicQosOk, .basicRecoverOk, .confirmSelectOk, .txSelect, .txSelectOk, .txCommit, .txCommitOk,
            .txRollback, .txRollbackOk:
            break
        }
    }
}
