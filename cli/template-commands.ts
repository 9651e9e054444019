/** `qis template publish|list|show`: the template registry (issue 7, "Hiring"). */
import {
  describeEntry,
  fetchTemplate,
  listTemplates,
  loadKeyFile,
  loadTemplate,
  publishTemplate,
  supersedesOf,
  type RegistryEntry,
} from '../src/index.js';
import { CONNECTION, registryOptions } from './node-commands.js';
import { numberFlag, str, type Command, type FlagSpec, type Flags } from './run.js';

const TIMEOUT: Record<string, FlagSpec> = {
  timeout: { type: 'string', value: 'MS', help: 'time limit including connecting (default 10000)' },
};

async function options(flags: Flags) {
  const o = await registryOptions(flags);
  return flags.timeout === undefined ? o : { ...o, timeoutMs: Math.max(1, numberFlag('timeout', str(flags.timeout), true)) };
}

function fieldText(f: Record<string, unknown>): string {
  const extra = Array.isArray(f['values']) ? ` [${(f['values'] as string[]).join(', ')}]` : Array.isArray(f['bins']) ? ` bins [${(f['bins'] as number[]).join(', ')}]` : '';
  return `${String(f['name'])}: ${String(f['kind'])}${extra}`;
}

function renderEntry(e: RegistryEntry): string {
  const d = e.template.doc;
  const sup = supersedesOf(e.template);
  return [
    `template   ${d.name} v${d.version}`,
    `id         ${e.tplId}`,
    `curator    ${e.curator}`,
    ...(sup ? [`supersedes ${sup}`] : []),
    `fields     ${d.fields.map((f, i) => `${i + 1}. ${fieldText(f as unknown as Record<string, unknown>)}`).join('\n           ')}`,
    ...(d.context ? [`context    ${d.context.join(', ')}`] : []),
    `outcome    ${JSON.stringify(d.outcome)}`,
    `publishers ${e.publishers} node(s) with a verified packet on this broker`,
  ].join('\n');
}

const publish: Command = {
  path: ['template', 'publish'],
  summary: 'sign a template as its curator and publish it, retained, on qis/1/t/<tplId>',
  flags: {
    ...CONNECTION,
    key: { type: 'string', value: 'FILE', help: "the curator's key file (qis keygen)", required: true },
    template: { type: 'string', value: 'FILE', help: 'template file (YAML or JSON)', required: true },
    ...TIMEOUT,
  },
  details: `The document is the template's canonical JSON (RFC 8785) in a COSE_Sign1 envelope signed by the
curator's key for the topic qis/1/t/<tplId>; it is published retained at QoS 1 and the command
waits for the broker's PUBACK. A qis broker checks the signature and that the document hashes to
the id; a closed registry admits only listed ids or listed curators (ERR_TEMPLATE_REFUSED
otherwise: the broker's log names the reason). Publishing the same template again is harmless.
Example:
  qis template publish --url mqtt://localhost --key curator.json --template examples/bearing-failure.yaml`,
  async run(flags) {
    const [key, template] = await Promise.all([loadKeyFile(str(flags.key)), loadTemplate(str(flags.template))]);
    const r = await publishTemplate(key, template, await options(flags));
    return {
      json: { ok: true, tplId: r.tplId, topic: r.topic, curator: r.curator, name: template.doc.name, version: template.doc.version, bytes: r.bytes.length },
      human: `published ${template.doc.name} v${template.doc.version}: acknowledged by the broker\nid        ${r.tplId}\ntopic     ${r.topic}\ncurator   ${r.curator}`,
    };
  },
};

const list: Command = {
  path: ['template', 'list'],
  summary: "the broker's verified template documents: name, version, curator, publishers",
  flags: { ...CONNECTION, ...TIMEOUT },
  details: `Reads qis/1/t/+ and then the retained packets of each template in one round trip each
(PROTOCOL §7); every document and packet is verified, failures are counted, not listed.
"publishers" is the number of distinct nodes with a verified live packet under the template.`,
  async run(flags) {
    const r = await listTemplates(await options(flags));
    const drops = Object.entries(r.dropped).map(([c, n]) => `${c} ${n}`);
    const rows = r.templates.map((e) => `${e.tplId}  ${`${e.template.doc.name} v${e.template.doc.version}`.padEnd(28)}  curator ${e.curator}  ${String(e.publishers).padStart(5)} publisher(s)`);
    return {
      json: { ok: true, broker: r.broker, completeness: r.completeness, dropped: r.dropped, templates: r.templates.map(describeEntry) },
      human: [
        r.templates.length === 0 ? 'no templates on this broker' : `${r.templates.length} template(s):`,
        ...rows,
        ...(drops.length > 0 ? [`dropped (failed verification): ${drops.join(', ')}`] : []),
        ...(r.completeness === 'quiet-period' ? ['(the broker does not keep the sync order: the read ended after a quiet period)'] : []),
      ].join('\n'),
    };
  },
};

const show: Command = {
  path: ['template', 'show'],
  summary: 'one template from the registry by id: verified document, curator, fields, publishers',
  positionals: [{ name: 'id', help: 'template id (26 base32 characters)' }],
  flags: { ...CONNECTION, ...TIMEOUT },
  details: 'Exit status 1 with ERR_TEMPLATE_NOT_FOUND when the broker holds no document for the id, ERR_TEMPLATE_HASH or ERR_BAD_SIGNATURE when the one it holds does not verify.',
  async run(flags) {
    const e = await fetchTemplate(str(flags.id), await options(flags));
    return { json: { ok: true, ...describeEntry(e) }, human: renderEntry(e) };
  },
};

export const templateCommands: readonly Command[] = [publish, list, show];
