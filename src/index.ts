/**
 * qis-mqtt public surface. `broker/` and `firmware-bridge/` import only this file.
 * @packageDocumentation
 */
export { QisError, ERROR_CODES, isQisError, type ErrorCode } from './protocol/errors.js';
export { sha256, b32, b32decode, isB32Id16, enc, toHex, fromHex, equalBytes, utf8Bytes } from './protocol/bytes.js';
export { encodeCbor, decodeCbor, CborTag, CborSimple, CborFloat, MAX_DEPTH, type CborValue, type DecodeOptions } from './protocol/cbor.js';
export { jcs } from './protocol/jcs.js';
export {
  generateKey,
  keyFromSeed,
  nodeIdOf,
  isNodeId,
  signEd25519,
  verifyEd25519,
  peerCachedOrRoom,
  saveKeyFile,
  loadKeyFile,
  loadOrCreateKeyFile,
  keyToJson,
  keyFromJson,
  ED25519_BACKENDS,
  type NodeKey,
  type NodeId,
  type Ed25519Backend,
  type KeyFileJson,
} from './protocol/identity.js';
export {
  compileTemplate,
  parseTemplate,
  loadTemplate,
  canon,
  isTplId,
  MAX_FIELDS,
  type Template,
  type TemplateDoc,
  type TplId,
  type FieldSpec,
  type OutcomeSpec,
} from './protocol/template.js';
export {
  address,
  outcomeTopic,
  cohortFilter,
  parseOutcomeTopic,
  LEVEL_LENGTH,
  type Address,
  type Situation,
  type ParsedTopic,
} from './protocol/fingerprint.js';
export {
  encodePayload,
  decodePayload,
  sigStructure,
  signPacket,
  decodeSign1,
  verifySign1,
  decodePacket,
  verifyPacket,
  checkPacket,
  MAX_PACKET_BYTES,
  ALG_ED25519,
  ALG_EDDSA,
  COSE_SIGN1_TAG,
  type Outcome,
  type PacketFields,
  type PayloadFields,
  type Sign1,
  type DecodedPacket,
  type VerifiedPacket,
  type VerifyOptions,
  type CheckResult,
} from './protocol/packet.js';
export { createOutcomePacket, checkOutcomeFits, type OutcomePacketInput, type OutcomePacket } from './protocol/outcome.js';
export { foldCohort, topicMatches, CohortFolder, type CohortMessage, type CohortFold, type FoldOptions } from './protocol/cohort.js';
// The verify worker's job and wire (the broker's verifier pool and a query's cohort both use them).
export { verifyJob, type Job as VerifyJob, type JobResult as VerifyJobResult } from './protocol/verify-job.js';
export { canonicalKid } from './protocol/packet-fast.js';
export { PackedBatch, resultAt, startVerifyWorker, type PackedResults } from './protocol/verify-wire.js';
export { backoffDelay, backoffBound, backoffOptions, BACKOFF_DEFAULTS, type BackoffOptions } from './node/backoff.js';
export { createNode } from './node/node.js';
export {
  type QisNode,
  type NodeOptions,
  type PublishOptions,
  type PublishResult,
  type FlushResult,
  type QueryOptions,
  type QueryResult,
  type TrustReport,
  type EnrolmentState,
  type WatchOptions,
  type ReportOptions,
  type ReportResult,
  type ScoresResult,
  type ConsultResult,
  type WatchEvent,
  type WatchIterator,
  type NodeStatus,
  type TlsOptions,
  type Timers,
} from './node/types.js';
export { BROKER_INFO_TOPIC, type BrokerKind } from './node/broker-kind.js';
export { tlsClientOptions } from './node/tls.js';
export {
  synthesize,
  wilson,
  weightedQuantile,
  type Synthesis,
  type SynthesisOptions,
  type SynthesisContext,
  type SynthPacket,
  type CategorySummary,
  type NumberSummary,
  type MapSummary,
  type InsufficientSummary,
  type KeySummary,
  type LabelStat,
  type OutlierReport,
} from './synthesis/index.js';
export {
  signTemplate,
  verifyTemplateDoc,
  sameRouting,
  supersedesOf,
  templateTopic,
  TEMPLATE_TOPIC_PREFIX,
  type VerifiedTemplate,
} from './protocol/template-doc.js';
export {
  publishTemplate,
  publishRevocation,
  listTemplates,
  fetchTemplate,
  describeEntry,
  type RegistryOptions,
  type RegistryEntry,
  type RegistryList,
} from './node/registry-session.js';
export { mkdirs } from './protocol/mkdirs.js';
export { writeFileDurable, syncDir, lockDir, lockOwner, lockOwnerText } from './node/durable.js';
export {
  signScorePacket,
  verifyScorePacket,
  checkScorePacket,
  encodeScorePayload,
  decodeScorePayload,
  scoreTopic,
  scoreFilter,
  parseScoreTopic,
  REL_BINS,
  type ScoreFields,
  type VerifiedScore,
  type ScoreVerifyOptions,
} from './protocol/score.js';
export {
  scorePrediction,
  addScore,
  scoreFieldsOf,
  rankTemplates,
  poolRecord,
  cappedK,
  thompsonChoose,
  sampleBeta,
  betaCdf,
  betaQuantile,
  calibrationSvg,
  calibrationPoints,
  predictionOf,
  relBin,
  EMPTY_TOTALS,
  type Prediction,
  type PredictionScore,
  type ScoreTotals,
  type TrackRecord,
  type RankRow,
  type CalibrationPoint,
  type ThompsonDraw,
} from './elections/darwin.js';
export { prng } from './elections/prng.js';
// Enrolment (PROTOCOL §10), node login (§11), queriers that trust operators
export {
  createEnrolment,
  decodeEnrolment,
  checkEnrolment,
  checkPacketEnrolment,
  clearEnrolmentCache,
  attachEnrolment,
  readEnrolment,
  operatorIdOf,
  parseOperatorRef,
  signRevocation,
  verifyRevocation,
  revocationTopic,
  revocationIndex,
  enrolmentExpiresIn,
  KCWT_LABEL,
  DEFAULT_SKEW_MS,
  ENROLMENT_FILE,
  ENROLMENT_REASONS,
  REVOCATION_TOPIC_PREFIX,
  type OperatorId,
  type Enrolment,
  type EnrolmentInput,
  type EnrolmentPolicy,
  type EnrolmentCheck,
  type EnrolmentReason,
  type RevocationFields,
  type VerifiedRevocation,
} from './protocol/enrolment.js';
export { installEnrolment, loadEnrolment } from './node/enrolment-file.js';
export { createLogin, verifyLogin, LOGIN_AAD, MAX_LOGIN_BYTES, type LoginInput, type LoginCredentials, type LoginPolicy, type LoginCheck, type LoginReason } from './protocol/login.js';
export { filterTrusted, capOperatorShare, trustPolicy, type TrustOptions, type EnrolledCandidate, type TrustFilterResult, type OperatorCap } from './synthesis/trust.js';
export { deliveryRefused, likelyReason, probeBrokerTime, brokerInfoTime, CLOCK_SUSPECT_MS, type ProbeOptions } from './node/broker-clock.js';
export { listOutbox, type ListedEntry, type OutboxListing } from './node/outbox-listing.js';
