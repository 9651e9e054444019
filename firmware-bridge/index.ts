/** firmware-bridge: outcomes from PLCs (Modbus TCP) and factory MQTT (Sparkplug B). */
export { startModbusBridge, startSparkplugBridge, readMachine, openTransport, endpointKey, machineBlocks, type Bridge, type BridgeEvent, type BridgeOptions, type DeviceStatus } from './bridge.js';
export {
  loadModbusConfig,
  loadSparkplugConfig,
  parseModbusConfig,
  parseSparkplugConfig,
  type ModbusBridgeConfig,
  type SparkplugBridgeConfig,
  type ModbusMachine,
  type SparkplugMachine,
  type Rule,
  type Trigger,
  type ValueSpec,
} from './config.js';
export { BridgeHealth, type ConnectionState, type HealthSources } from './health.js';
export type { HttpListen, BrokerTarget } from './config.js';
export { MachineMapper, isSkip, type Emission, type Skip, type ReadingValue } from './mapping.js';
export { ModbusRtuClient, type RtuTarget } from './serial.js';
export { ModbusTcpClient, ModbusException, decodeRegisters, decodeString, decodeBit, planBlocks, toBigEndian, type ModbusTransport, type ByteOrder, type NumericType, type Block, type Span, encodeReadRequest, parseReadResponse, takeFrame, registerCount, EXCEPTION_NAMES, type Table, type RegisterType, type WordOrder } from './modbus.js';
export { decodeSparkplugPayload, encodeRebirthRequest, metricValue, parseSparkplugTopic, ncmdTopic, EdgeNodeState, DATATYPE, MAX_PAYLOAD_BYTES, MAX_TEMPLATE_DEPTH, MAX_DATASET_CELLS, type Payload, type Metric, type MetricValue, type RawValue, type DataSet, type Template as SparkplugTemplate, type SparkplugTopic } from './sparkplug.js';
