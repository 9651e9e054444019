/**
 * The browser's surface of src/: what the web console (console/app) uses to verify and
 * synthesise in the page. Only protocol, synthesis and elections code, none of the node runtime
 * (connections, outboxes, worker threads), so the page bundle pulls in no node-only module beyond
 * the few node:crypto/fs entry points the console's build shims (console/build.ts).
 */
export { equalBytes } from './protocol/bytes.js';
export { foldCohort, topicMatches } from './protocol/cohort.js';
export { checkPacketEnrolment, readEnrolment, type EnrolmentReason } from './protocol/enrolment.js';
export { isQisError, type ErrorCode } from './protocol/errors.js';
export { address, cohortFilter, parseOutcomeTopic, type Address, type Situation } from './protocol/fingerprint.js';
export type { Ed25519Backend } from './protocol/identity.js';
export { checkPacket, decodePacket, decodeSign1, sigStructure, type VerifiedPacket } from './protocol/packet.js';
export { REL_BINS, checkScorePacket, parseScoreTopic, type VerifiedScore } from './protocol/score.js';
export type { FieldSpec, Template } from './protocol/template.js';
export { TEMPLATE_TOPIC_PREFIX, templateTopic, verifyTemplateDoc } from './protocol/template-doc.js';
export { synthesize } from './synthesis/index.js';
export type { CategorySummary, NumberSummary, Synthesis } from './synthesis/types.js';
export { calibrationPoints, rankTemplates, type CalibrationPoint, type RankRow, type TrackRecord } from './elections/darwin.js';
