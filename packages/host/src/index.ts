export * from './logger.js';
export * from './systemd-unit.js';
