/** What the tests share: settings, and the context analytics.js sends, as Segment delivers it. */

export const ENDPOINT = 'https://timeline.test'
export const settings = { apiKey: 'tlk_abcdefghijklmnopqrstuvwxyz012345', endpoint: ENDPOINT }
export const T0 = '2026-03-01T12:00:00.000Z'

export const context = {
  ip: '203.0.113.7',
  library: { name: 'analytics.js', version: 'next-1.84.0' },
  locale: 'en-US',
  page: {
    path: '/pricing',
    referrer: 'https://www.google.com/',
    search: '?utm_source=google',
    title: 'Pricing - Example',
    url: 'https://example.com/pricing?utm_source=google'
  },
  campaign: { name: 'spring', source: 'google', medium: 'cpc', term: 'timeline', content: 'ad-1' },
  traits: { email: 'ada@example.com' },
  userAgent: 'Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0 Safari/537.36'
}

/** Segment's way of sending the key, which our ingest reads: Basic base64(KEY:). */
export const basicAuth = `Basic ${Buffer.from(`${settings.apiKey}:`).toString('base64')}`
