import { memoryIndexFactory } from '../../src/index/memory';
import { describeIndexConformance } from './index-conformance';

describeIndexConformance('memory', memoryIndexFactory);
