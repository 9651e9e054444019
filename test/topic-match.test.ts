// MQTT 3.1.1 §4.7 topic filters (src/protocol/cohort.ts topicMatcher, which a query's read runs
// on every message it receives): the specification's own examples, and the `$` rule.
import t from 'tap';
import { topicMatcher, topicMatches } from '../src/protocol/cohort.js';

const cases: [filter: string, topic: string, matches: boolean][] = [
  ['sport/tennis/player1/#', 'sport/tennis/player1', true],
  ['sport/tennis/player1/#', 'sport/tennis/player1/ranking', true],
  ['sport/tennis/player1/#', 'sport/tennis/player1/score/wimbledon', true],
  ['sport/tennis/player1/#', 'sport/tennis/player2', false],
  ['sport/#', 'sport', true],
  ['sport/#', 'sports', false],
  ['#', 'sport/tennis', true],
  ['sport/tennis/+', 'sport/tennis/player1', true],
  ['sport/tennis/+', 'sport/tennis/player1/ranking', false],
  ['sport/tennis/+', 'sport/tennis', false],
  ['sport/+', 'sport', false],
  ['sport/+', 'sport/', true],
  ['+/+', '/finance', true],
  ['/+', '/finance', true],
  ['+', '/finance', false],
  ['+/tennis/#', 'sport/tennis/player1', true],
  ['+/tennis/#', 'sport/golf', false],
  ['sport/+/player1', 'sport/tennis/player1', true],
  ['sport/+/player1', 'sport/tennis/player2', false],
  ['sport/tennis', 'sport/tennis', true],
  ['sport/tennis', 'sport/tennis/player1', false],
  ['sport/tennis', 'sport/tenni', false],
  ['#', '$SYS/monitor/Clients', false],
  ['+/monitor/Clients', '$SYS/monitor/Clients', false],
  ['$SYS/#', '$SYS/monitor/Clients', true],
  ['$SYS/monitor/+', '$SYS/monitor/Clients', true],
];

t.test('topic filters - the MQTT 3.1.1 §4.7 examples, one filter compiled once and tested on many topics', async (t) => {
  for (const [filter, topic, want] of cases) {
    t.equal(topicMatches(filter, topic), want, `${filter} ${want ? 'matches' : 'does not match'} ${topic}`);
  }
  const m = topicMatcher('sport/tennis/+');
  t.same(['sport/tennis/a', 'sport/tennis', 'sport/tennis/a/b', 'sport/tennisx/a'].map(m), [true, false, false, false], 'a compiled filter keeps no state between topics');
});
